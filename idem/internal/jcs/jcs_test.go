package jcs

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The examples of RFC 8785, section 3.2.2 (serialisation) and 3.2.3 (sorting).
func TestCanonicalizeRFC8785Examples(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{
			name: "3.2.2 primitives",
			in: `{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`,
			want: `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
		},
		{
			name: "3.2.3 sorting by UTF-16 code units",
			in: `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`,
			want: "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
		{name: "nested objects sorted at every level", in: `{"b":{"z":1,"a":[{"y":2,"x":1}]},"a":null}`, want: `{"a":null,"b":{"a":[{"x":1,"y":2}],"z":1}}`},
		{name: "whitespace everywhere", in: " \t\r\n[ 1 , { } , [ ] , \"\" ] \n", want: `[1,{},[],""]`},
		{name: "escapes kept minimal", in: `"\u0008\u0009\u000a\u000c\u000d\u001f\u007f\u2028\/"`, want: "\"\\b\\t\\n\\f\\r\\u001f\u007f\u2028/\""},
		{name: "non-ASCII literal", in: `"h\u00e9llo wörld \ud834\udd1e"`, want: `"héllo wörld 𝄞"`},
		{name: "escaped names sort by their value", in: `{"\u0062":1,"a":2}`, want: `{"a":2,"b":1}`},
		{name: "scalar", in: `-0`, want: `0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tt.in))
			if err != nil {
				t.Fatalf("Canonicalize: %v", err)
			}
			if string(got) != tt.want {
				t.Fatalf("Canonicalize\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// The number examples of RFC 8785, appendix B, given as IEEE 754 bit patterns.
func TestCanonicalNumbersRFC8785AppendixB(t *testing.T) {
	tests := []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	}
	for _, tt := range tests {
		f := math.Float64frombits(tt.bits)
		if got := string(appendES6Number(nil, f)); got != tt.want {
			t.Errorf("appendES6Number(%#x) = %s, want %s", tt.bits, got, tt.want)
		}
		// The same value, written by Go in several JSON spellings, must
		// canonicalise to the same text.
		for _, spelling := range []string{
			strconv.FormatFloat(f, 'g', -1, 64),
			strconv.FormatFloat(f, 'e', 20, 64),
			strconv.FormatFloat(f, 'E', -1, 64),
		} {
			got, err := Canonicalize([]byte(spelling))
			if err != nil {
				t.Errorf("Canonicalize(%s): %v", spelling, err)
				continue
			}
			if string(got) != tt.want {
				t.Errorf("Canonicalize(%s) = %s, want %s", spelling, got, tt.want)
			}
		}
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	tests := map[string]string{
		"empty":                  ``,
		"invalid UTF-8":          "\"\xff\"",
		"truncated UTF-8":        "\"\xe2\x82\"",
		"overlong UTF-8":         "\"\xc0\xaf\"",
		"UTF-8 surrogate":        "\"\xed\xa0\x80\"",
		"lone high surrogate":    `"\ud83d"`,
		"lone low surrogate":     `"\ude00"`,
		"reversed pair":          `"\ude00\ud83d"`,
		"duplicate names":        `{"a":1,"b":2,"a":3}`,
		"duplicate escaped name": `{"a":1,"\u0061":2}`,
		"overflow":               `1e400`,
		"negative overflow":      `-1e400`,
		"10 000 levels":          deep,
		"raw control character":  "\"a\nb\"",
		"bad escape":             `"\x"`,
		"leading zero":           `01`,
		"trailing data":          `{} {}`,
		"unterminated":           `{"a":`,
		"NaN":                    `NaN`,
		"single quotes":          `{'a':1}`,
		"trailing comma":         `[1,]`,
		"bare minus":             `-`,
		"dot without digits":     `1.`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Canonicalize([]byte(in))
			if !errors.As(err, new(*Error)) {
				t.Fatalf("Canonicalize(%.40q) error = %v, want an *Error", in, err)
			}
		})
	}
}

func TestRequestHash(t *testing.T) {
	hash := func(s string) [32]byte {
		t.Helper()
		h, err := RequestHash([]byte(s))
		if err != nil {
			t.Fatalf("RequestHash(%s): %v", s, err)
		}
		return h
	}
	base := hash(`{"a":1,"b":[true,null]}`)
	if want := sha256.Sum256([]byte(`{"a":1,"b":[true,null]}`)); base != want {
		t.Fatalf("hash = %x, want SHA-256 of the canonical text %x", base, want)
	}
	same := []string{
		`{ "b" : [ true , null ] , "a" : 1.0 }`,
		`{"idempotency_key":"abcdefghijklmnop","a":1,"b":[true,null]}`,
		`{"a":1,"b":[true,null],"context":{"correlation_id":"x"}}`,
		`{"a":1,"b":[true,null],"governance_context":"token-1"}`,
		`{"governance_context":{"any":"shape"},"a":1e0,"b":[true,null]}`,
	}
	for _, s := range same {
		if got := hash(s); got != base {
			t.Errorf("hash(%s) differs from the base payload's", s)
		}
	}
	different := []string{
		`{"a":1,"b":[true,null],"c":null}`,                         // explicit null is not absence
		`{"a":1,"b":[null,true]}`,                                  // array order matters
		`{"a":1,"b":[true,null],"context":"text"}`,                 // a string context is load-bearing
		`{"a":1,"b":[true,null],"ext":{"x":1}}`,                    // ext is part of the request
		`{"a":"1","b":[true,null]}`,                                // types matter
		`{"a":1,"b":[true,null],"nested":{"idempotency_key":"x"}}`, // only top level is excluded
	}
	for _, s := range different {
		if got := hash(s); got == base {
			t.Errorf("hash(%s) equals the base payload's", s)
		}
	}

	push := hash(`{"push_notification_config":{"url":"https://b.example/hook","authentication":{"schemes":["Bearer"],"credentials":"secret-1"}}}`)
	rotated := hash(`{"push_notification_config":{"authentication":{"credentials":"secret-2","schemes":["Bearer"]},"url":"https://b.example/hook"}}`)
	if push != rotated {
		t.Error("rotating push_notification_config.authentication.credentials changed the hash")
	}
	if hash(`{"push_notification_config":{"url":"https://b.example/other","authentication":{"schemes":["Bearer"],"credentials":"secret-1"}}}`) == push {
		t.Error("changing the push URL did not change the hash")
	}
	if hash(`{"push_notification_config":{"url":"https://b.example/hook","authentication":{"schemes":["HMAC-SHA256"],"credentials":"secret-1"}}}`) == push {
		t.Error("changing the push scheme did not change the hash")
	}
	if hash(`{"x":{"authentication":{"credentials":"a"}}}`) == hash(`{"x":{"authentication":{"credentials":"b"}}}`) {
		t.Error("credentials outside push_notification_config were excluded")
	}
}

func TestRequestHashRejects(t *testing.T) {
	for _, in := range []string{
		`[]`, `"x"`, `1`, `null`, ``, `  `,
		`{"idempotency_key":"a","idempotency_key":"b"}`, // duplicates of excluded names still count
		`{"context":{},"context":"x"}`,
		`{"push_notification_config":{"authentication":{"credentials":"a","credentials":"b"}}}`,
	} {
		if _, err := RequestHash([]byte(in)); !errors.As(err, new(*Error)) {
			t.Errorf("RequestHash(%q) error = %v, want an *Error", in, err)
		}
	}
}

// A canonical text is its own canonical form, and the canonicaliser never
// accepts what encoding/json rejects.
func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{
		`{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001]}`,
		`{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7}`,
		`{"idempotency_key":"k","context":{"a":1},"push_notification_config":{"authentication":{"credentials":"c"}}}`,
		`[1e21,1e-7,-0,0.1,123456789012345678]`, `"\u0000\/"`, `{"a":{"a":{"a":[]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		once, err := Canonicalize(data)
		if err != nil {
			if !errors.As(err, new(*Error)) {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		twice, err := Canonicalize(once)
		if err != nil {
			t.Fatalf("canonical form %q rejected: %v", once, err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatalf("not idempotent:\n once %q\ntwice %q", once, twice)
		}
		// The canonical form means the same as the input.
		var a, b any
		if json.Unmarshal(data, &a) == nil && json.Unmarshal(once, &b) == nil {
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("meaning changed:\n in %q\nout %q", data, once)
			}
		}
		if _, err := RequestHash(data); err == nil && (len(once) == 0 || once[0] != '{') {
			t.Fatalf("RequestHash accepted a non-object %q", data)
		}
	})
}
