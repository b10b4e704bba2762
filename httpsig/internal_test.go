package httpsig

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDictionaryStrict(t *testing.T) {
	good := []string{
		`sig1=("@method");created=1`,
		"a=1,\tb=2 ",
		`a=?1, b, c;x=?0`,
		`a=(1 2.5 "s" tok :AAAA:);p=-3`,
		``,
	}
	for _, in := range good {
		if _, err := parseDictionary([]string{in}, binStd); err != nil {
			t.Errorf("%q rejected: %v", in, err)
		}
	}
	bad := []string{
		`a=1, a=2`,           // duplicate key
		`a=1;p=1;p=2`,        // duplicate parameter
		`a=(1);p="x";p="y"`,  // duplicate inner-list parameter
		`a=1,`,               // trailing comma
		`A=1`,                // upper-case key
		`a="unterminated`,    // string
		`a="\x"`,             // bad escape
		`a=1.2345`,           // decimal fraction too long
		`a=1234567890123456`, // integer too long
		`a=@1659578233`,      // RFC 9651 date
		`a=%"display"`,       // RFC 9651 display string
		`a=:AB-_:`,           // base64url in sf-binary
		`a=:AAA:`,            // missing padding
		"a=\"caf\xc3\xa9\"",  // non-ASCII
		`a=(1 2`,             // unterminated inner list
		`a=?2`,               // bad boolean
	}
	for _, in := range bad {
		if _, err := parseDictionary([]string{in}, binStd); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	// Multiple field lines combine with ", " and duplicates across lines
	// are still duplicates.
	if _, err := parseDictionary([]string{`sig1=:AAAA:`, `sig1=:AAAA:`}, binStd); err == nil {
		t.Error("duplicate label across field lines accepted")
	}
}

func TestDecodeBinaryModes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		mode binaryMode
		ok   bool
	}{
		{"AAAA", binStd, true},
		{"AA==", binStd, true},
		{"AA", binStd, false},
		{"A-A_", binStd, false},
		{"A-A_", binURL, true},
		{"AA", binURL, true},
		{"AA==", binURL, false},
		{"A+B-", binURL, false},
		{"A+B-", binEither, false},
		{"ab/+", binEither, true},
		{"ab-_", binEither, true},
		{"abc", binEither, true},
		{"ab_=", binEither, false},
	} {
		_, err := decodeBinary(tc.in, tc.mode)
		if (err == nil) != tc.ok {
			t.Errorf("decodeBinary(%q, %d) err=%v, want ok=%v", tc.in, tc.mode, err, tc.ok)
		}
	}
}

func TestParseSignatureHeadersStructure(t *testing.T) {
	in := `sig1=("@method" "@target-uri" "@authority");created=1;expires=2;nonce="KXYnfEfJ0PBRZXQyVXfVQA";keyid="k";alg="ed25519";tag="t";ext=?1`
	sig := `sig1=:` + strings.Repeat("A", 86) + `:`
	ps, err := parseSignatureHeaders(ProfileWebhook, "sig1", []string{in}, []string{sig})
	if err != nil {
		t.Fatal(err)
	}
	// Unknown parameters are kept in the signed serialization.
	if !strings.HasSuffix(ps.sigParams, `;ext`) {
		t.Errorf("sigParams %q lost the extension parameter", ps.sigParams)
	}
	for _, bad := range []string{
		`sig1=("@method" "@method");created=1`,              // duplicate component
		`sig1=("@method";req);created=1`,                    // component parameters
		`sig1=("@request-response");created=1`,              // unsupported derived component
		`sig1=("Content-Type");created=1`,                   // upper-case field name
		`sig1=(@method);created=1`,                          // token, not string
		`sig1=("@method");created="1"`,                      // created not an integer
		`sig1=("@method");nonce="short"`,                    // nonce under 16 bytes
		`sig1=("@method");nonce="KXYnfEfJ0PBRZXQyVXfVQA=="`, // padded nonce
		`sig1=("@method");tag="a";tag="b"`,                  // duplicate tag
		`sig2=("@method");created=1`,                        // no sig1 label
	} {
		if _, err := parseSignatureHeaders(ProfileWebhook, "sig1", []string{bad}, []string{sig}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := parseSignatureHeaders(ProfileRequest, "sig1", []string{in}, []string{sig}); err == nil {
		t.Error("3.2 profile accepted an unpadded signature")
	}
}

func TestParamsStringRoundTrip(t *testing.T) {
	in := `sig1=("@method" "@target-uri");created=1776520800;expires=1776521100;nonce="KXYnfEfJ0PBRZXQyVXfVQA";keyid="k";alg="ed25519";tag="adcp/webhook-signing/v1"`
	ps, err := parseSignatureHeaders(ProfileWebhook, "sig1", []string{in}, []string{"sig1=:" + strings.Repeat("A", 86) + ":"})
	if err != nil {
		t.Fatal(err)
	}
	if got := "sig1=" + ps.params.String(); got != in {
		t.Errorf("Params.String() = %q, want %q", got, in)
	}
	if ps.sigParams != strings.TrimPrefix(in, "sig1=") {
		t.Errorf("sigParams = %q", ps.sigParams)
	}
}

func TestPunycode(t *testing.T) {
	for in, want := range map[string]string{
		"bücher":   "xn--bcher-kva",
		"BÜCHER":   "xn--bcher-kva",
		"münchen":  "xn--mnchen-3ya",
		"例え":       "xn--r8jz45g",
		"ελληνικά": "xn--hxargifdar",
	} {
		got, err := idnaLabelToASCII(in)
		if err != nil || got != want {
			t.Errorf("idnaLabelToASCII(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"a b", "\u0301x", "a\u200bb"} {
		if _, err := idnaLabelToASCII(bad); err == nil {
			t.Errorf("idnaLabelToASCII(%q) accepted", bad)
		}
	}
}

func TestCanonicalEdgeCases(t *testing.T) {
	for in, want := range map[string]string{
		"https://a.example/%7e%2fx/../y":      "https://a.example/y",
		"https://a.example/a/%2E%2E/b":        "https://a.example/a/../b",
		"https://a.example:0443/p":            "https://a.example/p",
		"https://a.example:/p":                "https://a.example/p",
		"http://a.example:443/p":              "http://a.example:443/p",
		"https://[::ffff:1.2.3.4]:8443/p?q#f": "https://[::ffff:1.2.3.4]:8443/p?q",
		"https://a.example/p?x=%2f%41":        "https://a.example/p?x=%2f%41",
		"https://bücher。example/p":            "https://xn--bcher-kva.example/p",
	} {
		got, _, err := CanonicalTargetURI(in)
		if err != nil || got != want {
			t.Errorf("CanonicalTargetURI(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{
		"ftp://a.example/p", "https:a.example/p", "//a.example/p", "https://a.example/%zz",
		"https://a.example/a b", "https://a.example:99999/p", "https://a.example:8x/p",
		"https://a%2eexample/p", "https://[v1.x]/p", "https://[::1]x/p", "https://" + strings.Repeat("a", 64) + ".example/",
	} {
		if _, _, err := CanonicalTargetURI(bad); !errors.Is(err, ErrTargetURIMalformed) {
			t.Errorf("CanonicalTargetURI(%q) err = %v", bad, err)
		}
	}
}

func TestCheckJSON(t *testing.T) {
	for body, dup := range map[string]bool{
		`{"a":1,"b":{"a":2}}`:             false,
		`[{"a":1},{"a":2}]`:               false,
		`{"a":1,"a":2}`:                   true,
		`{"x":{"y":[{"k":1,"k":2}]}}`:     true,
		`{"x":[[{"d":{"e":1,"e":1}}]]}`:   true,
		`{"a":[1,2,{"b":3}],"c":"a"}`:     false,
		`{"a":{"b":1},"b":2}`:             false,
		`{"a":{},"a":1}`:                  true,
		`{"a":{"b":1,"c":2},"b":{"c":3}}`: false,
	} {
		err := checkJSON([]byte(body))
		var de *duplicateKeysError
		if got := errors.As(err, &de); got != dup {
			t.Errorf("%s: err = %v, want duplicate=%v", body, err, dup)
		}
	}
	for _, bad := range []string{`{"a":1} {"b":2}`, `{"a":1`, `{"a" 1}`, ``} {
		if checkJSON([]byte(bad)) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSanitizeKeyNames(t *testing.T) {
	got := sanitizeKeyNames([]string{
		"plain",
		"bad\x1bname",
		"rtl\u202eevil",
		strings.Repeat("é", 20), // 40 bytes
		"e", "f",
	})
	want := []string{"plain", "<sanitized:3>", "<sanitized:3>", strings.Repeat("é", 16), "<...2 more>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFailFromKeepsKind(t *testing.T) {
	e := ProfileWebhook.failFrom(ErrKeyRevoked, "9", nil)
	if e.Code != "webhook_signature_key_revoked" || e.Err != nil {
		t.Errorf("got %+v", e)
	}
	if !errors.Is(e, ErrKeyRevoked) || errors.Is(e, ErrReplayed) {
		t.Error("errors.Is mismatch")
	}
	if e.Challenge() != `Signature error="webhook_signature_key_revoked"` {
		t.Errorf("challenge %q", e.Challenge())
	}
}
