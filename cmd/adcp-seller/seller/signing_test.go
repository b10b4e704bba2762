package seller_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/httpsig/httpsigtest"
	"github.com/adcp-go/idempotency/idem"
)

// vectorsDir is the request-signing suite of the AdCP spec drop:
// $ADCP_SPEC_DIR, else the copy shared next to the repository.
func vectorsDir(t testing.TB) string {
	spec := httpsigtest.SpecDir(t, filepath.Join("..", "..", "..", "..", "shared", "spec", "adcp-3.2.0-beta.5"))
	return filepath.Join(spec, "test-vectors", "request-signing")
}

func loadKeys(t testing.TB) map[string]httpsigtest.Key {
	return httpsigtest.LoadKeys(t, filepath.Join(vectorsDir(t), "keys.json"))
}

// vectorSeller is a memory-mode seller configured as the vector's verifier:
// its keys, its capability (on the MCP endpoint for a vector aimed at /mcp,
// else on the grading endpoint, where the vectors' per-operation URLs
// land), its preloaded replay cache and revocation list, its clock.
func vectorSeller(t *testing.T, v *httpsigtest.Vector, keys map[string]httpsigtest.Key) *seller.Seller {
	t.Helper()
	state := httpsigtest.NewState(t, v)
	policy := &seller.SigningPolicy{Profile: v.RequestProfile(t), Capability: *v.VerifierCapability}
	rs := &seller.RequestSigning{
		Signers:     []seller.Signer{{Principal: "vector-signer", Keys: v.JWKS(t, keys)}},
		Revocations: state.Revocations,
		Nonces:      state.Nonces,
		Now:         v.Now,
		Grading:     policy,
	}
	if strings.HasSuffix(v.Request.URL, "/mcp") {
		rs.Policy, rs.Grading = policy, nil
	}
	s, err := seller.New(context.Background(), seller.Config{
		Tokens: sellertest.Tokens(), Idempotency: &idem.Config{Limiter: idem.Unlimited}, RequestSigning: rs,
		Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// quiet drops the sellers' logs: every refusal is logged, and these tests
// provoke hundreds.
var quiet = slog.New(slog.DiscardHandler)

// Every request-signing conformance vector of the spec (the legacy 3.1
// cases and profile-3.2), replayed through the seller's HTTP handler:
// positives are accepted, negatives answered 401 with exactly
// WWW-Authenticate: Signature error="<code>".
func TestSignedRequestVectors(t *testing.T) {
	dir := vectorsDir(t)
	keys := loadKeys(t)
	files := httpsigtest.Files(t, dir)
	if len(files) < 43 {
		t.Fatalf("found %d vectors under %s, want the 43 of AdCP 3.2.0-beta.5", len(files), dir)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(f.Rel, ".json"), func(t *testing.T) {
			var v httpsigtest.Vector
			httpsigtest.ReadJSON(t, f.Path, &v)
			rec := httptest.NewRecorder()
			vectorSeller(t, &v, keys).Handler().ServeHTTP(rec, v.Request.Server(t))
			challenge := rec.Header().Get("WWW-Authenticate")
			if v.ExpectedOutcome.Success {
				if rec.Code/100 != 2 || !strings.Contains(rec.Body.String(), `"verified_signer":true`) {
					t.Fatalf("status %d (%s) %s, want 2xx from a verified signature", rec.Code, challenge, rec.Body)
				}
				return
			}
			want := `Signature error="` + v.ExpectedOutcome.ErrorCode + `"`
			if rec.Code != http.StatusUnauthorized || challenge != want {
				t.Fatalf("got %d with WWW-Authenticate %q, want 401 with %q", rec.Code, challenge, want)
			}
		})
	}
}

// signedSeller is a memory-mode seller trusting the conformance keys, as
// adcp-seller -dev -trust-conformance-keys runs.
func signedSeller(t *testing.T) *seller.Seller {
	t.Helper()
	rs, err := seller.ConformanceSigning()
	if err != nil {
		t.Fatal(err)
	}
	s, err := seller.New(context.Background(), seller.Config{
		Tokens: sellertest.Tokens(), AllowLoopbackWebhooks: true,
		Idempotency: &idem.Config{Limiter: idem.Unlimited}, RequestSigning: rs, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// toolCall is a bare MCP tools/call to /mcp, as the compliance runner
// sends it.
func toolCall(t testing.TB, tool string, args map[string]any) *http.Request {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": tool, "arguments": args},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.NewRequest(http.MethodPost, "http://seller.test/mcp", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	return r
}

// sign signs r with a conformance key under profile, and returns it as
// the seller's server receives it.
func sign(t testing.TB, r *http.Request, key httpsigtest.Key, profile httpsig.Profile, components ...string) *http.Request {
	t.Helper()
	var body bytes.Buffer
	if r.Body != nil {
		if _, err := body.ReadFrom(r.Body); err != nil {
			t.Fatal(err)
		}
	}
	s, err := httpsig.NewSigner(profile, key.Kid, key.Signer(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Components = components
	if _, err := s.Sign(r, body.Bytes()); err != nil {
		t.Fatal(err)
	}
	in := httptest.NewRequest(r.Method, r.URL.String(), bytes.NewReader(body.Bytes()))
	in.Header = r.Header.Clone()
	return in
}

func serve(s *seller.Seller, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, r)
	return rec
}

func createArgs(key string) map[string]any {
	return map[string]any{
		"idempotency_key": key,
		"account":         map[string]any{"brand": map[string]any{"domain": "acme.example"}, "operator": "acme.example"},
		"brand":           map[string]any{"domain": "acme.example"},
		"start_time":      "2026-06-01T00:00:00Z",
		"end_time":        "2026-06-30T00:00:00Z",
		"packages":        []any{map[string]any{"product_id": "test-product", "budget": 100, "pricing_option_id": "default"}},
	}
}

// toolResult decodes a JSON-RPC tools/call answer.
func toolResult(t testing.TB, rec *httptest.ResponseRecorder) (structured map[string]any, isError bool) {
	t.Helper()
	var resp struct {
		Result struct {
			IsError           bool           `json:"isError"`
			StructuredContent map[string]any `json:"structuredContent"`
		} `json:"result"`
	}
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d (%s): %s", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	return resp.Result.StructuredContent, resp.Result.IsError
}

func wantChallenge(t testing.TB, rec *httptest.ResponseRecorder, code string) {
	t.Helper()
	if want := `Signature error="` + code + `"`; rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != want {
		t.Fatalf("got %d with WWW-Authenticate %q, want 401 with %q", rec.Code, rec.Header().Get("WWW-Authenticate"), want)
	}
}

// The MCP endpoint speaks the AdCP 3.2 profile: a verified signature
// authenticates its signer in place of a bearer token, and every other
// signed request is refused with its code, bearer token or not.
func TestSignedMCP(t *testing.T) {
	keys := loadKeys(t)
	ed, es := keys["test-ed25519-2026"], keys["test-es256-2026"]

	t.Run("verified signature authenticates the signer", func(t *testing.T) {
		s := signedSeller(t)
		for i, key := range []httpsigtest.Key{ed, es} {
			res, isErr := toolResult(t, serve(s, sign(t, toolCall(t, "create_media_buy", createArgs(fmt.Sprintf("signed-create-%04d", i))), key, httpsig.ProfileRequest)))
			if isErr || res["media_buy_id"] == nil {
				t.Fatalf("%s: signed create_media_buy failed: %v", key.Kid, res)
			}
		}
		if n, err := s.MediaBuyCount(context.Background(), seller.ConformancePrincipal); err != nil || n != 2 {
			t.Fatalf("signer has %d media buys (%v), want 2", n, err)
		}
		if n, _ := s.MediaBuyCount(context.Background(), sellertest.Principal); n != 0 {
			t.Fatalf("bearer principal has %d media buys, want 0", n)
		}
	})

	t.Run("the signature wins over a bearer token", func(t *testing.T) {
		s := signedSeller(t)
		r := toolCall(t, "create_media_buy", createArgs("signed-and-bearer-01"))
		r.Header.Set("Authorization", "Bearer "+sellertest.Token)
		if _, isErr := toolResult(t, serve(s, sign(t, r, ed, httpsig.ProfileRequest))); isErr {
			t.Fatal("signed create_media_buy failed")
		}
		if n, _ := s.MediaBuyCount(context.Background(), seller.ConformancePrincipal); n != 1 {
			t.Fatalf("signer has %d media buys, want 1", n)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		s := signedSeller(t)
		replayed := sign(t, toolCall(t, "create_media_buy", createArgs("replayed-create-01")), ed, httpsig.ProfileRequest)
		body := []byte(mustRead(t, replayed))
		replayed.Body = io.NopCloser(bytes.NewReader(body))
		if _, isErr := toolResult(t, serve(s, replayed)); isErr {
			t.Fatal("first submission refused")
		}
		replayed.Body = io.NopCloser(bytes.NewReader(body))

		tampered := sign(t, toolCall(t, "create_media_buy", createArgs("tampered-create-01")), ed, httpsig.ProfileRequest)
		tampered.Body = io.NopCloser(bytes.NewReader(bytes.Replace([]byte(mustRead(t, tampered)), []byte(`"budget":100`), []byte(`"budget":900`), 1)))

		badSig := sign(t, toolCall(t, "create_media_buy", createArgs("bad-signature-0001")), ed, httpsig.ProfileRequest)
		badSig.Header.Set("Signature", "sig1=:"+base64.StdEncoding.EncodeToString(make([]byte, 64))+":")
		badSig.Header.Set("Authorization", "Bearer "+sellertest.Token) // no fallback for a bad signature

		unsignedWebhookAuth := toolCall(t, "create_media_buy", map[string]any{
			"idempotency_key":          "webhook-auth-000001",
			"push_notification_config": map[string]any{"url": "https://buyer.example/hook", "authentication": map[string]any{"schemes": []string{"HMAC-SHA256"}, "credentials": strings.Repeat("x", 32)}},
		})
		unsignedWebhookAuth.Header.Set("Authorization", "Bearer "+sellertest.Token)

		for _, c := range []struct {
			name string
			r    *http.Request
			code string
		}{
			{"replayed nonce", replayed, "request_signature_replayed"},
			{"body changed after signing", tampered, "request_signature_digest_mismatch"},
			{"body not bound (3.2 requires content-digest)", sign(t, toolCall(t, "create_media_buy", createArgs("unbound-body-00001")), ed, httpsig.ProfileRequest, "@method", "@target-uri", "@authority", "content-type"), "request_signature_components_incomplete"},
			{"3.1 wire format on the 3.2 endpoint", sign(t, toolCall(t, "create_media_buy", createArgs("legacy-format-0001")), ed, httpsig.ProfileRequestLegacy), "request_signature_header_malformed"},
			{"revoked key", sign(t, toolCall(t, "create_media_buy", createArgs("revoked-key-000001")), keys["test-revoked-2026"], httpsig.ProfileRequest), "request_signature_key_revoked"},
			{"governance key", sign(t, toolCall(t, "create_media_buy", createArgs("governance-key-001")), keys["test-gov-2026"], httpsig.ProfileRequest), "request_signature_key_purpose_invalid"},
			{"invalid signature beside a valid bearer token", badSig, "request_signature_invalid"},
			{"unsigned webhook registration with legacy authentication", unsignedWebhookAuth, "request_signature_required"},
		} {
			t.Run(c.name, func(t *testing.T) { wantChallenge(t, serve(s, c.r), c.code) })
		}
		if n, _ := s.MediaBuyCount(context.Background(), seller.ConformancePrincipal); n != 1 {
			t.Fatalf("signer has %d media buys, want only the first submission's", n)
		}
	})

	t.Run("untrusted signer by default", func(t *testing.T) {
		s, err := seller.New(context.Background(), seller.Config{Tokens: sellertest.Tokens(), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wantChallenge(t, serve(s, sign(t, toolCall(t, "create_media_buy", createArgs("untrusted-key-0001")), ed, httpsig.ProfileRequest)), "request_signature_key_unknown")
		r := toolCall(t, "create_media_buy", createArgs("untrusted-key-0002"))
		r.URL.Path = "/adcp/create_media_buy"
		if rec := serve(s, sign(t, r, ed, httpsig.ProfileRequestLegacy)); rec.Code != http.StatusNotFound {
			t.Fatalf("grading endpoint answered %d without sandbox configuration, want 404", rec.Code)
		}
	})
}

// Unsigned requests are untouched: a bearer token authenticates as before,
// none gets the bearer layer's 401 without a Signature challenge, and the
// capability block is the 3.2 one.
func TestUnsignedMCP(t *testing.T) {
	s := signedSeller(t)
	r := toolCall(t, "get_adcp_capabilities", map[string]any{})
	r.Header.Set("X-Adcp-Auth", sellertest.Token)
	caps, isErr := toolResult(t, serve(s, r))
	if isErr {
		t.Fatalf("get_adcp_capabilities failed: %v", caps)
	}
	got, _ := json.Marshal(caps["request_signing"])
	if want := `{"covers_content_digest":"required","supported":true,"supported_for":["create_media_buy","update_media_buy"]}`; string(got) != want {
		t.Fatalf("request_signing = %s, want %s", got, want)
	}
	r = toolCall(t, "create_media_buy", createArgs("unsigned-create-001"))
	r.Header.Set("Authorization", "Bearer "+sellertest.Token)
	if res, isErr := toolResult(t, serve(s, r)); isErr {
		t.Fatalf("unsigned create_media_buy failed: %v", res)
	}
	rec := serve(s, toolCall(t, "create_media_buy", createArgs("unsigned-create-002")))
	if rec.Code != http.StatusUnauthorized || strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Signature") {
		t.Fatalf("unauthenticated: %d with WWW-Authenticate %q, want the bearer layer's 401", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
}

// One signed request sent by many goroutines at once is accepted exactly
// once: the replay check and insert are atomic.
func TestSignedReplayConcurrent(t *testing.T) {
	s := signedSeller(t)
	r := sign(t, toolCall(t, "create_media_buy", createArgs("concurrent-replay-1")), loadKeys(t)["test-ed25519-2026"], httpsig.ProfileRequest)
	body := []byte(mustRead(t, r))
	var accepted, replayed atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			c := r.Clone(context.Background())
			c.Body = io.NopCloser(bytes.NewReader(body))
			rec := serve(s, c)
			switch {
			case rec.Code == http.StatusOK:
				accepted.Add(1)
			case rec.Header().Get("WWW-Authenticate") == `Signature error="request_signature_replayed"`:
				replayed.Add(1)
			default:
				t.Errorf("status %d, WWW-Authenticate %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
			}
		})
	}
	wg.Wait()
	if accepted.Load() != 1 || replayed.Load() != 31 {
		t.Fatalf("accepted %d, replayed %d; want 1 and 31", accepted.Load(), replayed.Load())
	}
	if n, _ := s.MediaBuyCount(context.Background(), seller.ConformancePrincipal); n != 1 {
		t.Fatalf("%d media buys, want 1", n)
	}
}

func TestRequestSigningConfig(t *testing.T) {
	keys := loadKeys(t)
	set, err := httpsig.NewJWKS(keys["test-ed25519-2026"].JWK)
	if err != nil {
		t.Fatal(err)
	}
	for name, rs := range map[string]*seller.RequestSigning{
		"a kid in two signers":       {Signers: []seller.Signer{{Principal: "a", Keys: set}, {Principal: "b", Keys: set}}},
		"a signer without principal": {Signers: []seller.Signer{{Keys: set}}},
		"3.2 profile with a legacy digest policy": {Policy: &seller.SigningPolicy{Profile: httpsig.ProfileRequest,
			Capability: httpsig.Capability{Supported: true, CoversContentDigest: httpsig.DigestEither}}},
		"webhook profile": {Policy: &seller.SigningPolicy{Profile: httpsig.ProfileWebhook}},
	} {
		if _, err := seller.New(context.Background(), seller.Config{Tokens: sellertest.Tokens(), RequestSigning: rs}); err == nil {
			t.Errorf("%s: New accepted the configuration", name)
		}
	}
}

func mustRead(t testing.TB, r *http.Request) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := b.ReadFrom(r.Body); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
