package seller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
)

// a2aCall is a bare A2A message/send to /a2a invoking skill with args, as
// the compliance runner sends it ({skill, parameters}).
func a2aCall(t testing.TB, skill string, args map[string]any) *http.Request {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "id": 1, "method": "message/send",
		"params": map[string]any{"message": map[string]any{"kind": "message", "messageId": "m1", "role": "user",
			"parts": []any{map[string]any{"kind": "data", "data": map[string]any{"skill": skill, "parameters": args}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.NewRequest(http.MethodPost, "http://seller.test/a2a", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	return r
}

// a2aResult decodes the DataPart of a message/send answer.
func a2aResult(t testing.TB, rec *httptest.ResponseRecorder) (data map[string]any, isError bool) {
	t.Helper()
	var resp struct {
		Result struct {
			Status    struct{ State string } `json:"status"`
			Artifacts []struct {
				Name  string `json:"name"`
				Parts []struct {
					Data map[string]any `json:"data"`
				} `json:"parts"`
			} `json:"artifacts"`
		} `json:"result"`
	}
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d (%s): %s", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Result.Status.State != "completed" ||
		len(resp.Result.Artifacts) != 1 || len(resp.Result.Artifacts[0].Parts) != 1 {
		t.Fatalf("not a completed task with one artifact (%v): %s", err, rec.Body)
	}
	a := resp.Result.Artifacts[0]
	return a.Parts[0].Data, a.Name == "error"
}

// The A2A endpoint verifies signatures as /mcp does: a verified signature
// authenticates its signer, on the same key space as the signer's MCP
// calls; a bad one is refused with its code whatever bearer token comes
// with it; and the policy's required_for applies to the skill a
// message/send invokes.
func TestSignedA2A(t *testing.T) {
	keys := loadKeys(t)
	ed := keys["test-ed25519-2026"]

	t.Run("verified signature authenticates the signer across transports", func(t *testing.T) {
		s := signedSeller(t)
		first, isErr := a2aResult(t, serve(s, sign(t, a2aCall(t, "create_media_buy", createArgs("signed-a2a-create-1")), ed, httpsig.ProfileRequest)))
		if isErr || first["media_buy_id"] == nil || first["replayed"] != false {
			t.Fatalf("signed create_media_buy over A2A: %v", first)
		}
		again, isErr := toolResult(t, serve(s, sign(t, toolCall(t, "create_media_buy", createArgs("signed-a2a-create-1")), ed, httpsig.ProfileRequest)))
		if isErr || again["media_buy_id"] != first["media_buy_id"] || again["replayed"] != true {
			t.Fatalf("the same key signed over MCP: %v, want %v replayed", again, first["media_buy_id"])
		}
		if n, _ := s.MediaBuyCount(context.Background(), seller.ConformancePrincipal); n != 1 {
			t.Fatalf("signer has %d media buys, want 1", n)
		}
		if n, _ := s.MediaBuyCount(context.Background(), sellertest.Principal); n != 0 {
			t.Fatalf("bearer principal has %d media buys, want 0", n)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		s := signedSeller(t)
		tampered := sign(t, a2aCall(t, "create_media_buy", createArgs("tampered-a2a-0001")), ed, httpsig.ProfileRequest)
		tampered.Body = io.NopCloser(bytes.NewReader(bytes.Replace([]byte(mustRead(t, tampered)), []byte(`"budget":100`), []byte(`"budget":900`), 1)))
		withBearer := sign(t, a2aCall(t, "create_media_buy", createArgs("revoked-a2a-00001")), keys["test-revoked-2026"], httpsig.ProfileRequest)
		withBearer.Header.Set("Authorization", "Bearer "+sellertest.Token)
		webhookAuth := a2aCall(t, "create_media_buy", map[string]any{
			"idempotency_key":          "webhook-auth-a2a-01",
			"push_notification_config": map[string]any{"url": "https://buyer.example/hook", "authentication": map[string]any{"schemes": []string{"HMAC-SHA256"}, "credentials": strings.Repeat("x", 32)}},
		})
		webhookAuth.Header.Set("Authorization", "Bearer "+sellertest.Token)
		wantChallenge(t, serve(s, tampered), "request_signature_digest_mismatch")
		wantChallenge(t, serve(s, withBearer), "request_signature_key_revoked")
		wantChallenge(t, serve(s, webhookAuth), "request_signature_required")
		for _, p := range []string{seller.ConformancePrincipal, sellertest.Principal} {
			if n, _ := s.MediaBuyCount(context.Background(), p); n != 0 {
				t.Fatalf("%s has %d media buys after refusals, want 0", p, n)
			}
		}
	})

	t.Run("required_for names the skill", func(t *testing.T) {
		policy := seller.DefaultSigningPolicy()
		policy.Capability.RequiredFor = []string{"create_media_buy"}
		s, err := seller.New(context.Background(), seller.Config{Tokens: sellertest.Tokens(), Logger: quiet,
			Idempotency: &idem.Config{Limiter: idem.Unlimited}, RequestSigning: &seller.RequestSigning{Policy: &policy}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wantChallenge(t, serve(s, a2aCall(t, "create_media_buy", createArgs("required-a2a-0001"))), "request_signature_required")
		if rec := serve(s, a2aCall(t, "get_products", map[string]any{})); rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer realm=") {
			t.Fatalf("an unsigned get_products without a token: %d with WWW-Authenticate %q, want the bearer 401", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
		r := a2aCall(t, "create_media_buy", createArgs("required-a2a-0002"))
		r.Header.Set("Authorization", "Bearer "+sellertest.Token)
		if res, isErr := a2aResult(t, serve(s, r)); isErr {
			t.Fatalf("an unsigned create_media_buy with a bearer token: %v", res)
		}
	})
}

// Every A2A request gets one access log line with the principal, the A2A
// method, the skill, the idempotency outcome and the AdCP error code, and
// never the token, the key or the payload.
func TestA2AAccessLog(t *testing.T) {
	var logs bytes.Buffer
	s, err := seller.New(context.Background(), seller.Config{Tokens: sellertest.Tokens(),
		Idempotency: &idem.Config{Limiter: idem.Unlimited}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	args := createArgs("a2a-log-key-000001")
	for i, budget := range []int{100, 100, 200} {
		args["packages"].([]any)[0].(map[string]any)["budget"] = budget
		r := a2aCall(t, "create_media_buy", args)
		r.Header.Set("X-Adcp-Auth", sellertest.Token)
		if _, isErr := a2aResult(t, serve(s, r)); isErr != (i == 2) {
			t.Fatalf("call %d: isError %v", i, isErr)
		}
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "request" {
			lines = append(lines, m)
		}
	}
	want := []struct{ outcome, adcpError any }{{"executed", nil}, {"replayed", nil}, {"conflict", "IDEMPOTENCY_CONFLICT"}}
	if len(lines) != len(want) {
		t.Fatalf("%d access log lines, want %d: %s", len(lines), len(want), logs.String())
	}
	for i, l := range lines {
		if l["path"] != "/a2a" || l["principal"] != sellertest.Principal || l["a2a_method"] != "message/send" || l["tool"] != "create_media_buy" ||
			l["idempotency"] != want[i].outcome || l["adcp_error"] != want[i].adcpError || l["mcp_method"] != nil {
			t.Fatalf("line %d: %v", i, l)
		}
	}
	for _, secret := range []string{sellertest.Token, "a2a-log-key-000001", "acme.example"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the log holds %q: %s", secret, logs.String())
		}
	}
}

// The agent card names Config.PublicURL + /a2a at both well-known paths;
// without PublicURL, the Host the card was asked at (a bad Host is
// refused); a PublicURL that is not an origin is refused by New.
func TestA2AAgentCardURL(t *testing.T) {
	card := func(s *seller.Seller, path, host string) (int, map[string]any) {
		r := httptest.NewRequest(http.MethodGet, "http://seller.test"+path, nil)
		r.Host = host
		rec := serve(s, r)
		var c map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &c)
		return rec.Code, c
	}
	s, err := seller.New(context.Background(), seller.Config{Tokens: sellertest.Tokens(), Logger: quiet, PublicURL: "https://seller.example/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, path := range []string{"/.well-known/agent-card.json", "/a2a/.well-known/agent-card.json"} {
		if code, c := card(s, path, "evil.example"); code != http.StatusOK || c["url"] != "https://seller.example/a2a" {
			t.Fatalf("GET %s with PublicURL: %d, url %v", path, code, c["url"])
		}
	}
	derived, err := seller.New(context.Background(), seller.Config{Tokens: sellertest.Tokens(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer derived.Close()
	if code, c := card(derived, "/.well-known/agent-card.json", "127.0.0.1:8080"); code != http.StatusOK || c["url"] != "http://127.0.0.1:8080/a2a" {
		t.Fatalf("derived card: %d, url %v", code, c["url"])
	}
	if code, _ := card(derived, "/.well-known/agent-card.json", "evil.example/path?x"); code != http.StatusBadRequest {
		t.Fatalf("a Host with a path: %d, want 400", code)
	}
	for _, bad := range []string{"seller.example", "https://seller.example/a2a", "ftp://seller.example", "https://seller.example?x=1"} {
		if _, err := seller.New(context.Background(), seller.Config{Tokens: sellertest.Tokens(), Logger: quiet, PublicURL: bad}); err == nil {
			t.Errorf("PublicURL %q accepted", bad)
		}
	}
}
