package httpsig

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/dunglas/httpsfv"
)

var fuzzProfiles = []Profile{ProfileWebhook, ProfileRequest, ProfileRequestLegacy}

// FuzzParseSignatureHeaders feeds arbitrary Signature-Input / Signature
// pairs to the strict parser. It must never panic, and whatever it accepts
// must round-trip: re-serializing the selected member and re-parsing it
// yields the same parameters, components, @signature-params line and
// signature bytes. Accepted Signature-Input fields must also be accepted,
// with the same member names, by the reference RFC 8941 parser
// (github.com/dunglas/httpsfv), which this parser is stricter than.
func FuzzParseSignatureHeaders(f *testing.F) {
	sig64url := strings.Repeat("A", 86)
	sig64std := strings.Repeat("A", 86) + "=="
	seeds := []struct {
		input, sig string
		profile    uint8
	}{
		{`sig1=("@method" "@target-uri" "@authority" "content-type" "content-digest");created=1776520800;expires=1776521100;nonce="KXYnfEfJ0PBRZXQyVXfVQA";keyid="test-ed25519-webhook-2026";alg="ed25519";tag="adcp/webhook-signing/v1"`, "sig1=:" + sig64url + ":", 0},
		{`sig1=("@method" "@target-uri" "@authority" "content-type" "content-digest");created=1776520800;expires=1776521100;nonce="KXYnfEfJ0PBRZXQyVXfVQA";keyid="test-ed25519-2026";alg="ed25519";tag="adcp/request-signing/v1"`, "sig1=:" + sig64std + ":", 1},
		{`sig1=("@method" "@target-uri");created=1, relay=("@method");nonce="x";keyid="r";tag="t"`, "sig1=:" + sig64url + ":, relay=:AAAA:", 2},
		{`sig1=("@method");created=1, sig1=("@method");created=2`, "sig1=:AA:", 0},
		{`sig1=("@method");keyid=tok;x=?1;y=1.5;z=:AAAA:`, "sig1=:" + sig64std + ":;p", 1},
		{`sig1=this-is-not-valid-structured-fields`, "sig1=:A+B-:", 0},
		{"sig1=(\"@method\"\t);created=1", "sig1=:AA==:", 1},
		{`sig1=("@method" "@method")`, `sig1=:AA:`, 2},
		{`sig1=();created=-1;expires=999999999999999`, `sig1=:AAAA:`, 1},
	}
	for _, s := range seeds {
		f.Add(s.input, s.sig, s.profile)
	}
	f.Fuzz(func(t *testing.T, input, sig string, sel uint8) {
		p := fuzzProfiles[int(sel)%len(fuzzProfiles)]
		ps, err := parseSignatureHeaders(p, DefaultLabel, []string{input}, []string{sig})
		if err != nil {
			return
		}

		// Differential check against the reference parser.
		ref, err := httpsfv.UnmarshalDictionary([]string{input})
		if err != nil {
			t.Fatalf("accepted Signature-Input %q rejected by httpsfv: %v", input, err)
		}
		mine, err := parseDictionary([]string{input}, binStd)
		if err != nil {
			t.Fatalf("parseSignatureHeaders accepted what parseDictionary rejects: %v", err)
		}
		if !reflect.DeepEqual(ref.Names(), mine.Names()) {
			t.Fatalf("member names differ: httpsfv %q, ours %q", ref.Names(), mine.Names())
		}

		// Round trip through the canonical serialization.
		input2 := DefaultLabel + "=" + ps.sigParams
		sig2 := DefaultLabel + "=:" + encodeBinary(ps.signature, p.signatureEncoding()) + ":"
		ps2, err := parseSignatureHeaders(p, DefaultLabel, []string{input2}, []string{sig2})
		if err != nil {
			t.Fatalf("re-serialized headers rejected: %v\n%s\n%s", err, input2, sig2)
		}
		if ps2.sigParams != ps.sigParams {
			t.Fatalf("@signature-params not stable:\n%s\n%s", ps.sigParams, ps2.sigParams)
		}
		if !reflect.DeepEqual(ps2.params, ps.params) || !reflect.DeepEqual(ps2.present, ps.present) {
			t.Fatalf("params differ after round trip:\n%+v\n%+v", ps.params, ps2.params)
		}
		if !bytes.Equal(ps2.signature, ps.signature) {
			t.Fatal("signature bytes differ after round trip")
		}
	})
}

// FuzzCanonicalTargetURI checks that canonicalization never panics and that
// what it accepts is printable ASCII with the authority embedded verbatim.
func FuzzCanonicalTargetURI(f *testing.F) {
	for _, s := range []string{
		"https://seller.example.com/adcp/create_media_buy",
		"HTTPS://User:Pw@Bücher.Example.:443/a/./b/../%7e%2f?q=1+2#f",
		"https://[2001:DB8::1]:8443/p?",
		"https://[fe80::1%25eth0]/p",
		"http://a..b/p",
		"https://x/%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		target, authority, err := CanonicalTargetURI(raw)
		if err != nil {
			return
		}
		if !isASCII(target) || strings.ContainsAny(target, " \r\n\t#") {
			t.Fatalf("canonical target %q is not a clean ASCII URI", target)
		}
		if !strings.HasPrefix(target, "https://"+authority+"/") && !strings.HasPrefix(target, "http://"+authority+"/") {
			t.Fatalf("authority %q not embedded in %q", authority, target)
		}
		if _, a2, err := CanonicalTargetURI(target); err != nil || a2 != authority {
			t.Fatalf("canonical authority not stable: %q -> %q, %v", authority, a2, err)
		}
	})
}
