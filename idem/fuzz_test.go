package idem

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/adcp-go/idempotency/idem/internal/jcs"
)

// Hostile-input fuzz targets for the request path (issue 7, part 4). The
// canonicaliser's own target is FuzzCanonicalize in internal/jcs; its
// hostile seeds live in testdata/fuzz/FuzzCanonicalize. Run one target with
//
//	go test ./idem -run '^$' -fuzz '^FuzzValidateKey$' -fuzztime 30s
//
// (make reliability runs each for FUZZTIME). Plain `go test` replays the
// seeds below and every file under testdata/fuzz.

// keyPattern is AdCP's definition of an idempotency key, written
// independently of ValidateKey's table.
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{16,255}$`)

// keyMessages are the only messages a key error may carry: fixed texts, so
// that a rejected key is never echoed back or logged.
var keyMessages = map[string]bool{
	"idempotency_key is required on mutating requests":           true,
	"idempotency_key must be at least 16 characters":             true,
	"idempotency_key must be at most 255 characters":             true,
	"idempotency_key may contain only A-Z, a-z, 0-9 and _ . : -": true,
	"idempotency_key is malformed":                               true, // ErrInvalidKey's own text
}

func hostileKeys() []string {
	return []string{
		"", "a", strings.Repeat("k", 15), strings.Repeat("k", 16), strings.Repeat("k", 255), strings.Repeat("k", 256),
		strings.Repeat("k", 100000),
		"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50",
		"clé-idempotente-ü-0001",         // unicode
		"ｆｕｌｌｗｉｄｔｈ-ｋｅｙ-0001",             // fullwidth letters that look like ASCII
		"key-with-nul-\x00-0000000001",   // control characters
		"key-with-newline\n000000000001", // a key that could forge a log line
		"key-with-tab\t0000000000000001",
		"key with spaces in it 0001",
		"key/with/slashes/0000000001",
		"key\xff\xfe-invalid-utf8-000001", // not UTF-8
		"key-0000000000000001\u202e",      // a bidi override at the end
		"$(rm -rf /)-0000000000000001",
		"' OR 1=1 --000000000000000000",
		"{principal}:key-0000000000001", // Redis hash-tag braces
	}
}

// FuzzValidateKey: a key is accepted exactly when it matches AdCP's pattern,
// and a rejection is an INVALID_REQUEST on field idempotency_key whose
// message is a fixed text.
func FuzzValidateKey(f *testing.F) {
	for _, k := range hostileKeys() {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		if want := keyPattern.MatchString(key); (err == nil) != want {
			t.Fatalf("ValidateKey(%q) = %v; the pattern says valid=%v", key, err, want)
		}
		if err == nil {
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidRequest || e.Field != "idempotency_key" || e.Recovery != RecoveryCorrectable {
			t.Fatalf("ValidateKey(%q) = %#v, want INVALID_REQUEST, field idempotency_key, correctable", key, err)
		}
		if !errors.Is(err, ErrMissingKey) && !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("ValidateKey(%q) = %v matches neither ErrMissingKey nor ErrInvalidKey", key, err)
		}
		if !keyMessages[e.Message] {
			t.Fatalf("ValidateKey(%q): message %q is not one of the fixed texts", key, e.Message)
		}
		wire, _ := json.Marshal(Wire(err))
		if !json.Valid(wire) || !bytes.Contains(wire, []byte(`"code":"INVALID_REQUEST"`)) {
			t.Fatalf("wire form %s", wire)
		}
	})
}

// maxFuzzPayload is the payload limit FuzzPrepare runs with: small, so that
// the fuzzer crosses it often.
const maxFuzzPayload = 4096

// FuzzPrepare drives the whole request validation (principal, key,
// operation, payload size, canonical hash) that RunInTx and Do run before
// they touch storage. A request is accepted exactly when its key is valid,
// its payload fits the limit and is a canonicalisable JSON object; every
// rejection is an INVALID_REQUEST *Error that echoes neither key nor
// payload; an accepted payload's hash ignores an added context object.
func FuzzPrepare(f *testing.F) {
	for _, s := range []struct{ key, payload string }{
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `{"packages":[{"product_id":"p1","budget":5000}]}`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `[1,2,3]`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `"a string"`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `null`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `{"a":1,"a":2}`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `{"idempotency_key":"x","idempotency_key":"y"}`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", "{\"a\":\"\xff\"}"},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `{"a":"\ud800"}`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `{"budget":1e400}`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `{"budget":123456789012345678901234567890}`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `{"a":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`},
		{"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", `{"a":"` + strings.Repeat("x", maxFuzzPayload) + `"}`},
		{"short", `{}`},
		{"clé-idempotente-ü-0001", `{}`},
	} {
		f.Add(s.key, []byte(s.payload))
	}
	f.Fuzz(func(t *testing.T, key string, payload []byte) {
		p, err := prepare(Request{Principal: "fuzz", Key: key, Operation: "create_media_buy", Payload: payload}, maxFuzzPayload)
		keyErr := ValidateKey(key)
		hash, hashErr := CanonicalJSONSHA256(payload)
		wantOK := keyErr == nil && len(payload) <= maxFuzzPayload && hashErr == nil
		if (err == nil) != wantOK {
			t.Fatalf("prepare(%q, %q) = %v; key: %v, %d bytes, hash: %v", key, payload, err, keyErr, len(payload), hashErr)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalidRequest || e.Recovery != RecoveryCorrectable {
				t.Fatalf("prepare(%q, %q) = %#v, want a correctable INVALID_REQUEST", key, payload, err)
			}
			if !errors.Is(err, ErrInvalidPayload) && !errors.Is(err, ErrInvalidKey) && !errors.Is(err, ErrMissingKey) {
				t.Fatalf("prepare: %v matches no validation sentinel", err)
			}
			msg := err.Error()
			if len(key) >= 8 && strings.Contains(msg, key) {
				t.Fatalf("error %q echoes the key", msg)
			}
			if len(payload) >= 8 && strings.Contains(msg, string(payload)) {
				t.Fatalf("error %q echoes the payload", msg)
			}
			return
		}
		if p.hash != hash {
			t.Fatal("prepare's hash differs from CanonicalJSONSHA256")
		}
		// A context object is excluded from the hash: adding one to an
		// accepted payload that has none leaves the hash as it was.
		canon, err := jcs.Canonicalize(payload)
		if err != nil {
			t.Fatalf("accepted payload does not canonicalise: %v", err)
		}
		var withContext []byte
		if string(canon) == "{}" {
			withContext = []byte(`{"context":{"correlation_id":"retry-2"}}`)
		} else {
			withContext = append([]byte(`{"context":{"correlation_id":"retry-2"},`), bytes.TrimLeft(payload, " \t\r\n")[1:]...)
		}
		if h2, err := CanonicalJSONSHA256(withContext); err == nil && h2 != hash {
			t.Fatalf("adding a context object changed the hash of %q", payload)
		}
	})
}
