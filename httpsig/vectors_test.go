package httpsig_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/httpsig/httpsigtest"
)

// specDir locates the AdCP spec drop: $ADCP_SPEC_DIR, else the copy shared
// next to the repository.
func specDir(t testing.TB) string {
	return httpsigtest.SpecDir(t, filepath.Join("..", "..", "shared", "spec", "adcp-3.2.0-beta.5"))
}

// suite is one conformance directory tree: its keys and its profile rule.
type suite struct {
	name    string // directory under test-vectors/
	profile func(t testing.TB, v *httpsigtest.Vector) httpsig.Profile
}

var suites = []suite{
	{name: "webhook-signing", profile: func(testing.TB, *httpsigtest.Vector) httpsig.Profile { return httpsig.ProfileWebhook }},
	{name: "request-signing", profile: func(t testing.TB, v *httpsigtest.Vector) httpsig.Profile { return v.RequestProfile(t) }},
}

type tally struct {
	pass, total int
}

func TestConformanceVectors(t *testing.T) {
	spec := specDir(t)
	results := map[string]*tally{}
	var order []string
	for _, s := range suites {
		root := filepath.Join(spec, "test-vectors", s.name)
		keys := httpsigtest.LoadKeys(t, filepath.Join(root, "keys.json"))
		for _, f := range httpsigtest.Files(t, root) {
			bucket := s.name + "/" + f.Dir
			if results[bucket] == nil {
				results[bucket] = &tally{}
				order = append(order, bucket)
			}
			results[bucket].total++
			ok := t.Run(s.name+"/"+strings.TrimSuffix(f.Rel, ".json"), func(t *testing.T) {
				var v httpsigtest.Vector
				httpsigtest.ReadJSON(t, f.Path, &v)
				p := s.profile(t, &v)
				runVector(t, &v, p, keys)
			})
			if ok {
				results[bucket].pass++
			}
		}
	}
	for _, b := range order {
		t.Logf("%-36s %d/%d passed", b, results[b].pass, results[b].total)
	}
}

func runVector(t *testing.T, v *httpsigtest.Vector, p httpsig.Profile, keys map[string]httpsigtest.Key) {
	h := httpsigtest.NewState(t, v)
	ver := httpsig.NewVerifier(p, v.JWKS(t, keys))
	ver.Nonces = h.Nonces
	ver.Revocations = h.Revocations
	ver.Now = v.Now
	if v.VerifierCapability != nil {
		ver.LegacyDigestPolicy = v.VerifierCapability.CoversContentDigest
	}

	r := v.Request.Client(t, true)
	got, err := ver.Verify(context.Background(), r, []byte(v.Request.Body))

	if v.ExpectedOutcome.Success {
		if err != nil {
			t.Fatalf("expected success, got %v", err)
		}
		if v.ExpectedSignatureBase != nil && got.Base != *v.ExpectedSignatureBase {
			t.Errorf("verifier signature base mismatch\n got: %q\nwant: %q", got.Base, *v.ExpectedSignatureBase)
		}
		checkSignerReproduces(t, v, p, keys, got)
		return
	}

	if errors.Is(err, httpsig.ErrUnsigned) {
		// Pre-check: unsigned requests are policy, not verification.
		if v.VerifierCapability == nil {
			t.Fatalf("unsigned vector without verifier_capability")
		}
		if err := v.VerifierCapability.Validate(p); err != nil && p == httpsig.ProfileRequest {
			t.Fatalf("capability: %v", err)
		}
		req := httpsig.Requirement{
			Mode:                  v.VerifierCapability.ModeFor(httpsig.RequestOperation(r, []byte(v.Request.Body))),
			Mandatory:             v.VerifierCapability.Supported && httpsig.CarriesWebhookAuthentication([]byte(v.Request.Body)),
			FallbackAuthenticated: r.Header.Get("Authorization") != "",
		}
		d := req.Decide(err)
		if d.Action != httpsig.ActionReject {
			t.Fatalf("unsigned request: decision %v, want reject with %s", d.Action, v.ExpectedOutcome.ErrorCode)
		}
		err = d.Err
	}
	var e *httpsig.Error
	if !errors.As(err, &e) {
		t.Fatalf("expected *httpsig.Error with code %s, got %v", v.ExpectedOutcome.ErrorCode, err)
	}
	t.Logf("rejected: %v", err)
	if e.Code != v.ExpectedOutcome.ErrorCode {
		t.Fatalf("code %s, want %s (%v)", e.Code, v.ExpectedOutcome.ErrorCode, err)
	}
	if p.Code(err) != e.Code && !errors.Is(err, httpsig.ErrSignatureRequired) {
		t.Errorf("Profile.Code(err) = %q, want %q", p.Code(err), e.Code)
	}
}

// checkSignerReproduces signs the vector's request afresh with the vector's
// key, time and nonce, and checks that the signer computes the same
// signature base, Content-Digest and (Ed25519 being deterministic) the same
// signature; ES256 signatures are checked by verifying them instead.
func checkSignerReproduces(t *testing.T, v *httpsigtest.Vector, p httpsig.Profile, keys map[string]httpsigtest.Key, got *httpsig.Verified) {
	if v.ExpectedSignatureBase == nil || len(v.JWKSOverride) > 0 {
		return
	}
	k, ok := keys[got.KeyID]
	if !ok || k.D == "" {
		t.Fatalf("no private key for %s", got.KeyID)
	}
	nonce, err := base64.RawURLEncoding.DecodeString(got.Params.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	s, err := httpsig.NewSigner(p, got.KeyID, k.Signer(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return got.Params.Created }
	s.Validity = got.Params.Expires.Sub(got.Params.Created)
	s.NonceSource = bytes.NewReader(nonce)
	s.Label = got.Label
	defaults := []string{"@method", "@target-uri", "@authority"}
	if p == httpsig.ProfileWebhook || v.Request.Body != "" {
		defaults = append(defaults, "content-type", "content-digest")
	}
	if !slices.Equal(got.Params.Components, defaults) {
		s.Components = got.Params.Components
	}

	r := v.Request.Client(t, false)
	sig, err := s.Sign(r, []byte(v.Request.Body))
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if sig.Base != *v.ExpectedSignatureBase {
		t.Fatalf("signer base mismatch\n got: %q\nwant: %q", sig.Base, *v.ExpectedSignatureBase)
	}
	if want := v.Request.Headers["Content-Digest"]; slices.Contains(sig.Params.Components, "content-digest") && r.Header.Get("Content-Digest") != want {
		t.Errorf("Content-Digest %q, want %q", r.Header.Get("Content-Digest"), want)
	}
	wantSig := strings.SplitN(v.Request.Headers["Signature"], ", ", 2)[0]
	if sig.Params.Alg == httpsig.AlgEd25519 && r.Header.Get("Signature") != wantSig {
		t.Errorf("Signature %q, want %q", r.Header.Get("Signature"), wantSig)
	}
	wantInput := strings.SplitN(v.Request.Headers["Signature-Input"], ", ", 2)[0]
	if r.Header.Get("Signature-Input") != wantInput {
		t.Errorf("Signature-Input %q, want %q", r.Header.Get("Signature-Input"), wantInput)
	}

	if sig.Params.Alg == httpsig.AlgEd25519 {
		t.Logf("signer reproduced signature base and Ed25519 signature byte for byte")
	} else {
		t.Logf("signer reproduced signature base; ES256 signature checked by verification")
	}

	// Round trip: our own signature verifies under the vector's key.
	set, err := httpsig.NewJWKS(keys[got.KeyID].JWK)
	if err != nil {
		t.Fatal(err)
	}
	ver := httpsig.NewVerifier(p, set)
	ver.Now = s.Now
	ver.LegacyDigestPolicy = httpsig.DigestEither
	if _, err := ver.Verify(context.Background(), r, []byte(v.Request.Body)); err != nil {
		t.Fatalf("signer output does not verify: %v", err)
	}
}

type canonCase struct {
	Name              string `json:"name"`
	Rule              string `json:"rule"`
	InputURL          string `json:"input_url"`
	ExpectedTargetURI string `json:"expected_target_uri"`
	ExpectedAuthority string `json:"expected_authority"`
	Reject            bool   `json:"reject"`
	ExpectedErrorCode string `json:"expected_error_code"`
}

func TestCanonicalizationVectors(t *testing.T) {
	var doc struct {
		Cases []canonCase `json:"cases"`
	}
	httpsigtest.ReadJSON(t, filepath.Join(specDir(t), "test-vectors", "request-signing", "canonicalization.json"), &doc)
	if len(doc.Cases) == 0 {
		t.Fatal("no canonicalization cases")
	}
	pass := 0
	for _, c := range doc.Cases {
		ok := t.Run(c.Name, func(t *testing.T) {
			target, authority, err := httpsig.CanonicalTargetURI(c.InputURL)
			if c.Reject {
				if err == nil {
					t.Fatalf("%s: accepted %q as %q (%s)", c.Rule, c.InputURL, target, authority)
				}
				if !errors.Is(err, httpsig.ErrTargetURIMalformed) {
					t.Fatalf("error %v does not match ErrTargetURIMalformed", err)
				}
				if code := httpsig.ProfileRequest.Code(err); code != c.ExpectedErrorCode {
					t.Fatalf("code %q, want %q", code, c.ExpectedErrorCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v", c.Rule, err)
			}
			if target != c.ExpectedTargetURI || authority != c.ExpectedAuthority {
				t.Fatalf("%s:\n got %q %q\nwant %q %q", c.Rule, target, authority, c.ExpectedTargetURI, c.ExpectedAuthority)
			}
		})
		if ok {
			pass++
		}
	}
	t.Logf("canonicalization.json: %d/%d cases passed", pass, len(doc.Cases))
}
