package adcp

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// The member walk against what it replaces, encoding/json into a
// map[string]json.RawMessage: the same members, the same bytes, the same
// verdict on what is an object; and plainString against encoding/json. Run longer with
//
//	go test ./adcp -run '^$' -fuzz '^FuzzMembers$' -fuzztime 60s
func FuzzMembers(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, ` { } `, `[]`, `null`, `"x"`, `1`, `{"a":1,}`, `{"a"}`, `{"a":1`, `{"a":1}}`, `{"a":1} x`,
		`{"idempotency_key":"k","context":{"a":[1,{"b":"}"}]},"account":null}`,
		`{"idempotency_key":"a","idempotency_key":"b"}`,
		`{"\u0069dempotency_key":"escaped name","x\"y":"\"}{","z\\":[]}`,
		`{ "adcp_version" : "3.2" , "adcp_major_version" :3 ,"n":-1.5e+3,"t":true,"f":false,"z":null }`,
		`{"status":"active","packages":[{"status":"x"}]}`,
		`{"s":"é\u00e9\ud83d\ude00","IDEMPOTENCY_KEY":"upper"}`,
		"{\"k\":\"tab\there\",\"c\":\"x\x01y\"}",
		"{\"a\":\"\xff\"}", "{\"\xff\":1}",
		`{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want map[string]json.RawMessage
		wantObject := json.Unmarshal(data, &want) == nil && want != nil
		got := map[string]json.RawMessage{}
		isObject := members(data, func(name, value []byte) bool {
			got[string(name)] = value
			if s, ok := plainString(value); ok {
				var want string
				if err := json.Unmarshal(value, &want); err != nil || s != want {
					t.Fatalf("%q: plainString %q, encoding/json %q (%v)", value, s, want, err)
				}
			}
			return true
		})
		if isObject != wantObject {
			t.Fatalf("%q: members says object %v, encoding/json %v", data, isObject, wantObject)
		}
		if !isObject {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("%q: members %q, encoding/json %q", data, got, want)
		}
		for name, v := range want {
			if g, ok := got[name]; !ok || !bytes.Equal(g, v) {
				t.Fatalf("%q: member %q is %q, encoding/json %q", data, name, g, v)
			}
			if !hasMember(data, name) {
				t.Fatalf("%q: hasMember(%q) is false", data, name)
			}
		}
		if _, ok := want["status"]; hasMember(data, "status") != ok {
			t.Fatalf("%q: hasMember(status) is %v", data, !ok)
		}
		args, err := ParseArguments(data)
		if len(bytes.TrimSpace(data)) == 0 {
			return // ParseArguments reads no arguments as {}
		}
		if err != nil || !bytes.Equal(args.Key, want["idempotency_key"]) || !bytes.Equal(args.Context, want["context"]) ||
			!bytes.Equal(args.Account, want["account"]) || !bytes.Equal(args.AdcpVersion, want["adcp_version"]) ||
			!bytes.Equal(args.AdcpMajorVersion, want["adcp_major_version"]) {
			t.Fatalf("%q: ParseArguments = %+v, %v", data, args, err)
		}
	})
}
