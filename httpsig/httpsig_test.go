package httpsig_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
)

var t0 = time.Unix(1776520800, 0)

func clock() time.Time { return t0 }

// fixture is a signer and a verifier sharing one freshly generated key.
type fixture struct {
	signer   *httpsig.Signer
	verifier *httpsig.Verifier
	nonces   *httpsig.MemoryNonceStore
}

func newFixture(t *testing.T, p httpsig.Profile, ec bool) *fixture {
	t.Helper()
	var s *httpsig.Signer
	var err error
	if ec {
		priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		s, err = httpsig.NewSigner(p, "k1", priv)
	} else {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		s, err = httpsig.NewSigner(p, "k1", priv)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Now = clock
	jwk, err := s.PublicJWK()
	if err != nil {
		t.Fatal(err)
	}
	set, err := httpsig.NewJWKS(jwk)
	if err != nil {
		t.Fatal(err)
	}
	nonces := &httpsig.MemoryNonceStore{PerKeyCap: 10, Now: clock}
	v := httpsig.NewVerifier(p, set)
	v.Now = clock
	v.Nonces = nonces
	return &fixture{signer: s, verifier: v, nonces: nonces}
}

func signedRequest(t *testing.T, f *fixture, url, body string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	if _, err := f.signer.Sign(r, []byte(body)); err != nil {
		t.Fatal(err)
	}
	return r
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var e *httpsig.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("got %v, want %s", err, code)
	}
}

func TestRoundTripAllProfiles(t *testing.T) {
	for _, p := range []httpsig.Profile{httpsig.ProfileWebhook, httpsig.ProfileRequest, httpsig.ProfileRequestLegacy} {
		for _, ec := range []bool{false, true} {
			f := newFixture(t, p, ec)
			body := `{"task_id":"t1","status":"completed"}`
			r := signedRequest(t, f, "https://Buyer.Example.com:443/hook/./a%7e?z=1&a=2", body)
			got, err := f.verifier.Verify(context.Background(), r, []byte(body))
			if err != nil {
				t.Fatalf("%v ec=%v: %v", p, ec, err)
			}
			if got.KeyID != "k1" || got.Params.Tag != p.Tag() {
				t.Errorf("%v: verified %+v", p, got)
			}
			if ec && len(got.Params.Alg) == 0 {
				t.Error("alg missing")
			}
			// The body the signer installed is the body that was signed.
			sent, _ := io.ReadAll(r.Body)
			if string(sent) != body {
				t.Errorf("request body %q", sent)
			}
		}
	}
}

func TestSecondDeliveryIsReplay(t *testing.T) {
	f := newFixture(t, httpsig.ProfileWebhook, false)
	body := `{"a":1}`
	r := signedRequest(t, f, "https://buyer.example.com/hook", body)
	if _, err := f.verifier.Verify(context.Background(), r, []byte(body)); err != nil {
		t.Fatal(err)
	}
	_, err := f.verifier.Verify(context.Background(), r, []byte(body))
	wantCode(t, err, "webhook_signature_replayed")
	if !errors.Is(err, httpsig.ErrReplayed) {
		t.Error("errors.Is(ErrReplayed) false")
	}
}

func TestConcurrentReplayAcceptsExactlyOnce(t *testing.T) {
	f := newFixture(t, httpsig.ProfileRequest, false)
	body := `{"a":1}`
	r := signedRequest(t, f, "https://seller.example.com/adcp/create_media_buy", body)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := r.Clone(context.Background())
			if _, err := f.verifier.Verify(context.Background(), rr, []byte(body)); err == nil {
				mu.Lock()
				accepted++
				mu.Unlock()
			} else if !errors.Is(err, httpsig.ErrReplayed) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if accepted != 1 {
		t.Fatalf("accepted %d times", accepted)
	}
}

func TestDuplicateKeyBodyBurnsNonce(t *testing.T) {
	f := newFixture(t, httpsig.ProfileWebhook, false)
	body := `{"status":"completed","status":"failed"}`
	r := signedRequest(t, f, "https://buyer.example.com/hook", body)
	_, err := f.verifier.Verify(context.Background(), r, []byte(body))
	wantCode(t, err, "webhook_body_malformed")
	_, err = f.verifier.Verify(context.Background(), r, []byte(body))
	wantCode(t, err, "webhook_signature_replayed")
}

func TestCrossVhostReplayRejected(t *testing.T) {
	f := newFixture(t, httpsig.ProfileRequest, false)
	body := `{"a":1}`
	r := signedRequest(t, f, "https://seller-a.example.com/adcp/create_media_buy", body)
	r.Host = "seller-b.example.com" // replayed to another vhost
	_, err := f.verifier.Verify(context.Background(), r, []byte(body))
	wantCode(t, err, "request_target_uri_malformed")

	// Server side: absolute-form request-target whose authority differs
	// from Host.
	srv := signedRequest(t, f, "https://seller-a.example.com/adcp/create_media_buy", body)
	srv.RequestURI = "https://seller-a.example.com/adcp/create_media_buy"
	srv.Host = "seller-b.example.com"
	srv.URL.Scheme, srv.URL.Host = "", ""
	_, err = f.verifier.Verify(context.Background(), srv, []byte(body))
	wantCode(t, err, "request_target_uri_malformed")
}

func TestServerSideRequest(t *testing.T) {
	f := newFixture(t, httpsig.ProfileWebhook, true)
	f.verifier.Scheme = "https" // TLS terminated upstream
	body := `{"a":1}`
	client := signedRequest(t, f, "https://buyer.example.com/hooks/%e2%98%83?b=2&a=1", body)

	var got *httpsig.Verified
	var verr error
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		got, verr = f.verifier.Verify(r.Context(), r, raw)
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	// Send the signed request to the test server with the original Host.
	client.URL.Scheme = "http"
	client.URL.Host = strings.TrimPrefix(srv.URL, "http://")
	client.Host = "buyer.example.com"
	resp, err := srv.Client().Do(client)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if verr != nil {
		t.Fatalf("server-side verify: %v", verr)
	}
	if !strings.Contains(got.Base, `"@target-uri": https://buyer.example.com/hooks/%E2%98%83?b=2&a=1`) {
		t.Errorf("base:\n%s", got.Base)
	}
}

func TestUnsignedAndHalfSigned(t *testing.T) {
	f := newFixture(t, httpsig.ProfileRequest, false)
	r, _ := http.NewRequest(http.MethodGet, "https://seller.example.com/p", nil)
	if _, err := f.verifier.Verify(context.Background(), r, nil); !errors.Is(err, httpsig.ErrUnsigned) {
		t.Fatalf("got %v, want ErrUnsigned", err)
	}
	r.Header.Set("Signature-Input", `sig1=("@method");created=1`)
	_, err := f.verifier.Verify(context.Background(), r, nil)
	wantCode(t, err, "request_signature_header_malformed")
}

func TestGETWithoutBodyNeedsNoDigest(t *testing.T) {
	f := newFixture(t, httpsig.ProfileRequest, false)
	r, _ := http.NewRequest(http.MethodGet, "https://seller.example.com/adcp/get_products?x=1", nil)
	sig, err := f.signer.Sign(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sig.Params.Components) != 3 || r.Header.Get("Content-Digest") != "" {
		t.Fatalf("components %v, digest %q", sig.Params.Components, r.Header.Get("Content-Digest"))
	}
	if _, err := f.verifier.Verify(context.Background(), r, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRequestProfileRequiresDigestWithBody(t *testing.T) {
	f := newFixture(t, httpsig.ProfileRequest, false)
	f.signer.Components = []string{"@method", "@target-uri", "@authority", "content-type"}
	body := `{"a":1}`
	r := signedRequest(t, f, "https://seller.example.com/adcp/create_media_buy", body)
	_, err := f.verifier.Verify(context.Background(), r, []byte(body))
	wantCode(t, err, "request_signature_components_incomplete")
	// LegacyDigestPolicy does not downgrade the 3.2 profile.
	f.verifier.LegacyDigestPolicy = httpsig.DigestEither
	_, err = f.verifier.Verify(context.Background(), r, []byte(body))
	wantCode(t, err, "request_signature_components_incomplete")
}

func TestWindowBoundaries(t *testing.T) {
	f := newFixture(t, httpsig.ProfileWebhook, false)
	body := `{}`
	for _, tc := range []struct {
		skew time.Duration
		ok   bool
	}{
		{60 * time.Second, true},    // created exactly 60 s ahead
		{61 * time.Second, false},   // beyond skew
		{-360 * time.Second, true},  // expires exactly 60 s ago
		{-361 * time.Second, false}, // expired
	} {
		f.signer.Now = func() time.Time { return t0.Add(tc.skew) }
		r := signedRequest(t, f, "https://buyer.example.com/hook", body)
		_, err := f.verifier.Verify(context.Background(), r, []byte(body))
		if (err == nil) != tc.ok {
			t.Errorf("skew %v: err %v", tc.skew, err)
		}
	}
}

func TestSignerRefusals(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := httpsig.NewSigner(httpsig.ProfileWebhook, "k", priv)
	s.Validity = httpsig.MaxValidity + time.Second
	r, _ := http.NewRequest(http.MethodPost, "https://b.example/h", nil)
	r.Header.Set("Content-Type", "application/json")
	if _, err := s.Sign(r, []byte(`{}`)); err == nil {
		t.Error("validity above 300 s accepted")
	}
	s.Validity = 0
	r.URL.Host, r.Host = "[fe80::1%eth0]", ""
	if _, err := s.Sign(r, []byte(`{}`)); !errors.Is(err, httpsig.ErrTargetURIMalformed) {
		t.Errorf("zone identifier: %v", err)
	}
	r2, _ := http.NewRequest(http.MethodPost, "https://b.example/h", nil)
	if _, err := s.Sign(r2, []byte(`{}`)); err == nil {
		t.Error("webhook without Content-Type signed")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := httpsig.NewSigner(httpsig.ProfileRequest, "k", p384); err == nil {
		t.Error("P-384 key accepted")
	}
	if _, err := httpsig.NewSigner(httpsig.ProfileRequest, "", priv); err == nil {
		t.Error("empty keyid accepted")
	}
}

func TestES256SignatureIsP1363(t *testing.T) {
	f := newFixture(t, httpsig.ProfileRequest, true)
	r, _ := http.NewRequest(http.MethodGet, "https://seller.example.com/x", nil)
	sig, err := f.signer.Sign(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sig.Value) != 64 || sig.Params.Alg != httpsig.AlgECDSAP256SHA256 {
		t.Fatalf("alg %s, %d-byte signature", sig.Params.Alg, len(sig.Value))
	}
	if !strings.HasSuffix(r.Header.Get("Signature"), "==:") {
		t.Errorf("3.2 Signature not padded sf-binary: %s", r.Header.Get("Signature"))
	}
}

func TestKeyPurposeChecks(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	jwk, _ := httpsig.NewPublicJWK("k", priv.Public())
	mutate := map[string]func(*httpsig.JWK){
		"no use":          func(k *httpsig.JWK) { k.Use = "" },
		"enc":             func(k *httpsig.JWK) { k.Use = "enc" },
		"sign only":       func(k *httpsig.JWK) { k.KeyOps = []string{"sign"} },
		"no adcp_use":     func(k *httpsig.JWK) { k.AdCPUse = "" },
		"webhook purpose": func(k *httpsig.JWK) { k.AdCPUse = "webhook-signing" },
		"governance":      func(k *httpsig.JWK) { k.AdCPUse = "governance-signing" },
		"alg ES256":       func(k *httpsig.JWK) { k.Alg = "ES256" },
		"no alg":          func(k *httpsig.JWK) { k.Alg = "" },
		"short x":         func(k *httpsig.JWK) { k.X = k.X[:20] },
		"kty EC mismatch": func(k *httpsig.JWK) { k.Kty, k.Crv = "EC", "P-256" },
	}
	for name, m := range mutate {
		k := jwk
		m(&k)
		s, _ := httpsig.NewSigner(httpsig.ProfileRequest, "k", priv)
		s.Now = clock
		v := httpsig.NewVerifier(httpsig.ProfileRequest, &httpsig.JWKS{Keys: []httpsig.JWK{k}})
		v.Now = clock
		r, _ := http.NewRequest(http.MethodGet, "https://seller.example.com/x", nil)
		if _, err := s.Sign(r, nil); err != nil {
			t.Fatal(err)
		}
		_, err := v.Verify(context.Background(), r, nil)
		var e *httpsig.Error
		if !errors.As(err, &e) || e.Code != "request_signature_key_purpose_invalid" {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestJWKSParseAndLookup(t *testing.T) {
	if _, err := httpsig.ParseJWKS([]byte(`{"keys":[{"kid":"a","kty":"OKP"},{"kid":"a","kty":"EC"}]}`)); err == nil {
		t.Error("duplicate kid accepted")
	}
	if _, err := httpsig.ParseJWKS([]byte(`{"keys":[{"kid":"a","kid":"b","kty":"OKP"}]}`)); err == nil {
		t.Error("duplicate JSON member accepted")
	}
	set, err := httpsig.ParseJWKS([]byte(`{"keys":[{"kid":"a","kty":"OKP"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.LookupKey(context.Background(), "b"); !errors.Is(err, httpsig.ErrKeyUnknown) {
		t.Errorf("lookup of unknown kid: %v", err)
	}
	amb := &httpsig.JWKS{Keys: []httpsig.JWK{{Kid: "a"}, {Kid: "a"}}}
	if _, err := amb.LookupKey(context.Background(), "a"); !errors.Is(err, httpsig.ErrKeyPurposeInvalid) {
		t.Errorf("ambiguous kid: %v", err)
	}
}

func TestJWKSHandler(t *testing.T) {
	var h httpsig.JWKSHandler
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, httpsig.WellKnownJWKSPath, nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("unpublished: %d", rec.Code)
	}

	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	current, _ := httpsig.NewPublicJWK("2026-05", edPriv.Public())
	next, _ := httpsig.NewPublicJWK("2026-06", ecPriv.Public())
	set, err := httpsig.NewJWKS(current, next)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Publish(set); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, httpsig.WellKnownJWKSPath, nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != httpsig.JWKSContentType {
		t.Fatalf("GET: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=300" {
		t.Errorf("Cache-Control %q", cc)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || len(doc.Keys) != 2 {
		t.Fatalf("body %s: %v", rec.Body, err)
	}
	ec := doc.Keys[1]
	for k, want := range map[string]any{"kid": "2026-06", "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "adcp_use": "request-signing"} {
		if ec[k] != want {
			t.Errorf("%s = %v, want %v", k, ec[k], want)
		}
	}
	if ops, _ := ec["key_ops"].([]any); len(ops) != 1 || ops[0] != "verify" {
		t.Errorf("key_ops %v", ec["key_ops"])
	}
	if _, hasD := ec["d"]; hasD {
		t.Error("private member served")
	}
	if !strings.HasPrefix(rec.Body.String(), `{"keys":[{"kid":"2026-05","kty":"OKP","crv":"Ed25519","x":"`) {
		t.Errorf("member order: %s", rec.Body)
	}
	// The published document round-trips into a working key source.
	parsed, err := httpsig.ParseJWKS(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range parsed.Keys {
		if _, err := k.PublicKey(); err != nil {
			t.Errorf("%s: %v", k.Kid, err)
		}
	}

	etag := rec.Header().Get("ETag")
	req := httptest.NewRequest(http.MethodGet, httpsig.WellKnownJWKSPath, nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Errorf("conditional GET: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, httpsig.WellKnownJWKSPath, nil))
	if rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("HEAD: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, httpsig.WellKnownJWKSPath, nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d", rec.Code)
	}

	// Rotation: retire the old key; the ETag changes.
	retired, _ := httpsig.NewJWKS(next)
	if err := h.Publish(retired); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, httpsig.WellKnownJWKSPath, nil))
	if rec.Header().Get("ETag") == etag || strings.Contains(rec.Body.String(), "2026-05") {
		t.Error("rotation not served")
	}
	if err := h.Publish(&httpsig.JWKS{Keys: []httpsig.JWK{current, current}}); err == nil {
		t.Error("duplicate kid published")
	}
}

func TestMemoryNonceStore(t *testing.T) {
	now := t0
	s := &httpsig.MemoryNonceStore{PerKeyCap: 2, TotalCap: 3, Now: func() time.Time { return now }}
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Remember(ctx, "a", "n1", now.Add(time.Minute)))
	if err := s.Remember(ctx, "a", "n1", now.Add(time.Minute)); !errors.Is(err, httpsig.ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	must(s.Remember(ctx, "a", "n2", now.Add(2*time.Minute)))
	if full, _ := s.AtCapacity(ctx, "a"); !full {
		t.Fatal("cap not reported")
	}
	if err := s.Remember(ctx, "a", "n3", now.Add(time.Minute)); !errors.Is(err, httpsig.ErrRateAbuse) {
		t.Fatalf("over cap: %v", err)
	}
	must(s.Remember(ctx, "b", "n1", now.Add(time.Minute)))
	if err := s.Remember(ctx, "c", "n1", now.Add(time.Minute)); !errors.Is(err, httpsig.ErrRateAbuse) {
		t.Fatalf("aggregate cap: %v", err)
	}
	now = now.Add(61 * time.Second) // n1 entries expire
	if full, _ := s.AtCapacity(ctx, "a"); full {
		t.Fatal("expired entries still counted")
	}
	must(s.Remember(ctx, "a", "n1", now.Add(time.Minute))) // remembered again after expiry
	must(s.Remember(ctx, "c", "n1", now.Add(time.Minute)))
	if s.Len() != 3 {
		t.Fatalf("Len = %d", s.Len())
	}
}

func TestRevocationList(t *testing.T) {
	now := t0
	l := &httpsig.RevocationList{Now: func() time.Time { return now }}
	ctx := context.Background()
	if err := l.CheckRevocation(ctx, "k"); !errors.Is(err, httpsig.ErrRevocationStale) {
		t.Fatalf("never updated: %v", err)
	}
	l.Update(httpsig.RevocationSnapshot{Updated: now, NextUpdate: now.Add(15 * time.Minute), RevokedKids: []string{"bad"}})
	if err := l.CheckRevocation(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := l.CheckRevocation(ctx, "bad"); !errors.Is(err, httpsig.ErrKeyRevoked) {
		t.Fatal(err)
	}
	now = now.Add(15*time.Minute + 4*15*time.Minute) // next_update + grace: still fresh
	if err := l.CheckRevocation(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if err := l.CheckRevocation(ctx, "k"); !errors.Is(err, httpsig.ErrRevocationStale) {
		t.Fatalf("stale: %v", err)
	}
}

func TestRequirementDecide(t *testing.T) {
	req := httpsig.Requirement{Mode: httpsig.ModeRequired}
	d := req.Decide(httpsig.ErrUnsigned)
	wantCode(t, d.Err, "request_signature_required")
	req.FallbackAuthenticated = true
	if d := req.Decide(httpsig.ErrUnsigned); d.Action != httpsig.ActionAccept || d.Source != httpsig.SourceFallback {
		t.Errorf("bearer fallback: %+v", d)
	}
	req.Mandatory = true
	if d := req.Decide(httpsig.ErrUnsigned); d.Action != httpsig.ActionReject {
		t.Errorf("mandatory: %+v", d)
	}
	op := errors.New("redis down")
	if d := (httpsig.Requirement{Mode: httpsig.ModeWarn, FallbackAuthenticated: true}).Decide(op); d.Action != httpsig.ActionReject || d.Err != op {
		t.Errorf("operational failure in warn mode: %+v", d)
	}
}
