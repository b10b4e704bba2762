// Package httpsigtest reads the AdCP RFC 9421 conformance vectors
// (test-vectors/webhook-signing and test-vectors/request-signing of the
// AdCP specification) and prepares the verifier state each vector assumes,
// so that every verifier built on package httpsig replays the same files:
// the package's own Verifier, and an HTTP server that verifies in front of
// its handlers. A new spec drop is a new folder, not new code.
//
// Every function fails the test through testing.TB rather than returning
// an error: a missing or unreadable spec is a failure, never a skip.
package httpsigtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
)

// SpecDir returns the AdCP spec drop named by $ADCP_SPEC_DIR, else
// fallback (typically a path from the test's package to the copy shared
// beside the repository). It fails t unless the drop has test vectors.
func SpecDir(t testing.TB, fallback string) string {
	t.Helper()
	dir := os.Getenv("ADCP_SPEC_DIR")
	if dir == "" {
		dir = fallback
	}
	if fi, err := os.Stat(filepath.Join(dir, "test-vectors")); err != nil || !fi.IsDir() {
		t.Fatalf("AdCP spec test vectors not found under %q (set ADCP_SPEC_DIR): %v", dir, err)
	}
	return dir
}

// ReadJSON decodes the JSON file into v.
func ReadJSON(t testing.TB, file string, v any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// Key is a keys.json entry: the public JWK and its published, test-only
// private scalar.
type Key struct {
	httpsig.JWK
	// D is the unpadded Base64URL private scalar (Ed25519 seed or P-256 d).
	D string `json:"_private_d_for_test_only"`
}

// Signer returns the private key: an ed25519.PrivateKey or a P-256
// *ecdsa.PrivateKey.
func (k Key) Signer(t testing.TB) crypto.Signer {
	t.Helper()
	d, err := base64.RawURLEncoding.DecodeString(k.D)
	if err != nil {
		t.Fatalf("%s: private d: %v", k.Kid, err)
	}
	switch k.Kty {
	case "OKP":
		return ed25519.NewKeyFromSeed(d)
	case "EC":
		priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil {
			t.Fatalf("%s: %v", k.Kid, err)
		}
		return priv
	}
	t.Fatalf("%s: unsupported kty %q", k.Kid, k.Kty)
	return nil
}

// LoadKeys reads a keys.json file, by kid.
func LoadKeys(t testing.TB, file string) map[string]Key {
	t.Helper()
	var doc struct {
		Keys []Key `json:"keys"`
	}
	ReadJSON(t, file, &doc)
	out := map[string]Key{}
	for _, k := range doc.Keys {
		out[k.Kid] = k
	}
	return out
}

// Vector is a conformance vector, in the shape the webhook-signing and
// request-signing suites share.
type Vector struct {
	// Name describes the case.
	Name string `json:"name"`
	// SigningProfileVersion is "3.0", "3.1" (the legacy request profile)
	// or "3.2"; webhook vectors leave it empty.
	SigningProfileVersion string `json:"signing_profile_version"`
	// ReferenceNow is the verifier's clock in Unix seconds; see Now.
	ReferenceNow int64 `json:"reference_now"`
	// Request is the request the verifier receives.
	Request Request `json:"request"`
	// VerifierCapability is the verifier's policy (request vectors).
	VerifierCapability *httpsig.Capability `json:"verifier_capability"`
	// JWKSRef names the keys.json entries the verifier trusts;
	// JWKSOverride replaces them (see JWKS).
	JWKSRef      []string        `json:"jwks_ref"`
	JWKSOverride json.RawMessage `json:"jwks_override"`
	// TestHarnessState is the verifier state to preload (see NewState).
	TestHarnessState map[string]json.RawMessage `json:"test_harness_state"`
	// ExpectedSignatureBase is the signature base of positive vectors.
	ExpectedSignatureBase *string `json:"expected_signature_base"`
	// ExpectedOutcome is the verdict: success, or the exact error code.
	ExpectedOutcome struct {
		Success   bool   `json:"success"`
		ErrorCode string `json:"error_code"`
	} `json:"expected_outcome"`
}

// RequestProfile is the request-signing profile the vector is pinned to:
// httpsig.ProfileRequestLegacy for "3.0" and "3.1", httpsig.ProfileRequest
// for "3.2". Any other version fails t.
func (v *Vector) RequestProfile(t testing.TB) httpsig.Profile {
	t.Helper()
	switch v.SigningProfileVersion {
	case "3.0", "3.1":
		return httpsig.ProfileRequestLegacy
	case "3.2":
		return httpsig.ProfileRequest
	}
	t.Fatalf("unknown signing_profile_version %q", v.SigningProfileVersion)
	return 0
}

// Now is the vector's reference time.
func (v *Vector) Now() time.Time { return time.Unix(v.ReferenceNow, 0) }

// JWKS is the verifier's key set: the jwks_override, which is either a
// full JWKS or a map from kid to a replacement JWK, else the jwks_ref
// entries of keys.
func (v *Vector) JWKS(t testing.TB, keys map[string]Key) *httpsig.JWKS {
	t.Helper()
	var full struct {
		Keys []httpsig.JWK `json:"keys"`
	}
	byKid := map[string]httpsig.JWK{}
	if len(v.JWKSOverride) > 0 {
		if err := json.Unmarshal(v.JWKSOverride, &full); err != nil || full.Keys == nil {
			full.Keys = nil
			if err := json.Unmarshal(v.JWKSOverride, &byKid); err != nil {
				t.Fatalf("jwks_override: %v", err)
			}
		}
	}
	if full.Keys != nil {
		return &httpsig.JWKS{Keys: full.Keys}
	}
	set := &httpsig.JWKS{}
	for _, kid := range v.JWKSRef {
		if k, ok := byKid[kid]; ok {
			set.Keys = append(set.Keys, k)
			continue
		}
		k, ok := keys[kid]
		if !ok {
			t.Fatalf("jwks_ref %q not in keys.json", kid)
		}
		set.Keys = append(set.Keys, k.JWK)
	}
	return set
}

// Request is a vector's HTTP request.
type Request struct {
	Method string `json:"method"`
	// URL is the full request URL, byte for byte as signed.
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	// Body is the exact body on the wire.
	Body string `json:"body"`
}

// Client builds the request as a client sends it. Without signature it
// leaves out Signature, Signature-Input and Content-Digest, for a signer
// to add afresh.
func (vr Request) Client(t testing.TB, withSignature bool) *http.Request {
	t.Helper()
	r, err := http.NewRequest(vr.Method, vr.URL, strings.NewReader(vr.Body))
	if err != nil {
		t.Fatalf("building request: %v", err)
	}
	for k, v := range vr.Headers {
		if !withSignature && (strings.EqualFold(k, "Signature") || strings.EqualFold(k, "Signature-Input") || strings.EqualFold(k, "Content-Digest")) {
			continue
		}
		r.Header.Set(k, v)
	}
	return r
}

// Server builds the request as an HTTP server receives it, for a handler:
// the origin-form request target byte for byte in RequestURI, the
// authority in Host, and TLS set for an https URL.
func (vr Request) Server(t testing.TB) *http.Request {
	t.Helper()
	scheme, rest, ok := strings.Cut(vr.URL, "://")
	if !ok {
		t.Fatalf("vector URL %q has no scheme", vr.URL)
	}
	authority, target := rest, "/"
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, target = rest[:i], rest[i:]
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatalf("vector request target %q: %v", target, err)
	}
	r := httptest.NewRequest(vr.Method, "/", strings.NewReader(vr.Body))
	r.URL, r.RequestURI, r.Host, r.TLS = u, target, authority, nil
	if scheme == "https" {
		r.TLS = &tls.ConnectionState{}
	}
	for k, v := range vr.Headers {
		r.Header.Set(k, v)
	}
	return r
}

// File is a vector file found by Files.
type File struct {
	// Rel is the path relative to the suite root, e.g.
	// "profile-3.2/negative/001-base64url-sf-binary.json"; Dir is its
	// directory, e.g. "profile-3.2/negative". Both use forward slashes.
	Rel, Dir string
	// Path is the file's path.
	Path string
}

// Files lists every *.json file under a directory named "positive" or
// "negative", at any depth below root, sorted by Rel. It fails t when
// there is none.
func Files(t testing.TB, root string) []File {
	t.Helper()
	var out []File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".json" {
			return err
		}
		if parent := filepath.Base(filepath.Dir(p)); parent != "positive" && parent != "negative" {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, File{Rel: filepath.ToSlash(rel), Dir: filepath.ToSlash(filepath.Dir(rel)), Path: p})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no vectors found", root)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rel < out[j].Rel })
	return out
}

// GradingNonceCap is the per-keyid replay-cache cap the vectors' runner
// contract grades against (test-kits/signed-requests-runner.yaml,
// grading_target_per_keyid_cap_requests); production caps are far higher.
const GradingNonceCap = 100

// State is the verifier state a vector assumes.
type State struct {
	// Nonces is a replay cache capped at GradingNonceCap entries per
	// keyid, on the vector's clock.
	Nonces *httpsig.MemoryNonceStore
	// Revocations is a revocation list, fresh at the vector's time unless
	// the vector says otherwise, on the vector's clock.
	Revocations *httpsig.RevocationList
}

// NewState returns the verifier state of v with its test_harness_state
// preloaded. A harness key it does not know fails t, so that a spec drop
// adding one teaches the harness instead of being ignored.
func NewState(t testing.TB, v *Vector) *State {
	t.Helper()
	now := v.Now()
	clock := func() time.Time { return now }
	s := &State{
		Nonces:      &httpsig.MemoryNonceStore{PerKeyCap: GradingNonceCap, Now: clock},
		Revocations: &httpsig.RevocationList{Now: clock},
	}
	fresh := httpsig.RevocationSnapshot{Updated: now, NextUpdate: now.Add(15 * time.Minute)}
	s.Revocations.Update(fresh)
	ctx := context.Background()
	for key, raw := range v.TestHarnessState {
		switch key {
		case "replay_cache_entries":
			var entries []struct {
				KeyID      string `json:"keyid"`
				Nonce      string `json:"nonce"`
				TTLSeconds int64  `json:"ttl_seconds"`
			}
			mustUnmarshal(t, raw, &entries)
			for _, e := range entries {
				ttl := time.Duration(e.TTLSeconds) * time.Second
				if ttl == 0 {
					ttl = httpsig.MaxValidity + httpsig.ClockSkew
				}
				if err := s.Nonces.Remember(ctx, e.KeyID, e.Nonce, now.Add(ttl)); err != nil {
					t.Fatal(err)
				}
			}
		case "revoked_kids":
			snap := fresh
			mustUnmarshal(t, raw, &snap.RevokedKids)
			s.Revocations.Update(snap)
		case "revocation_list":
			var snap httpsig.RevocationSnapshot
			mustUnmarshal(t, raw, &snap)
			s.Revocations.Update(snap)
		case "revocation_list_stale_seconds":
			var secs int64
			mustUnmarshal(t, raw, &secs)
			last := now.Add(-time.Duration(secs) * time.Second)
			s.Revocations.Update(httpsig.RevocationSnapshot{Updated: last, NextUpdate: last.Add(15 * time.Minute)})
		case "per_keyid_cap_filled_for", "replay_cache_per_keyid_cap_hit":
			var kid string
			if err := json.Unmarshal(raw, &kid); err != nil {
				var obj struct {
					KeyID string `json:"keyid"`
				}
				mustUnmarshal(t, raw, &obj)
				kid = obj.KeyID
			}
			for i := range GradingNonceCap {
				nonce := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{byte(i)}, 16))
				if err := s.Nonces.Remember(ctx, kid, nonce, now.Add(time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
		default:
			if !strings.HasPrefix(key, "$") {
				t.Fatalf("unsupported test_harness_state %q: teach the harness this state", key)
			}
		}
	}
	return s
}

func mustUnmarshal(t testing.TB, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
}
