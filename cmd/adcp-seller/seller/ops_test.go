package seller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/idem"
)

// logBuffer collects what a slog handler writes, for the test to read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the JSON log lines written so far.
func (l *logBuffer) lines(t *testing.T) (out []map[string]any, text string) {
	t.Helper()
	l.mu.Lock()
	text = l.b.String()
	l.mu.Unlock()
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out, text
}

func get(t *testing.T, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// /healthz, /readyz through the seller's life, request ids, and the access
// log: one line per request with its fields, and no token, key, payload or
// webhook URL anywhere in the log.
func TestOperationalEndpoints(t *testing.T) {
	var logs logBuffer
	s, err := seller.New(context.Background(), seller.Config{
		Tokens: sellertest.Tokens(), AllowLoopbackWebhooks: true,
		Idempotency: &idem.Config{Limiter: idem.Unlimited},
		Logger:      slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	probe := func(path string, wantStatus int, wantBody string) {
		t.Helper()
		resp, body := get(t, srv.URL+path, nil)
		if resp.StatusCode != wantStatus || body != wantBody+"\n" {
			t.Errorf("GET %s: %d %q, want %d %q", path, resp.StatusCode, body, wantStatus, wantBody)
		}
	}
	probe("/healthz", http.StatusOK, "ok")
	probe("/readyz", http.StatusServiceUnavailable, "not ready: starting")
	if err := s.Ready(t.Context()); !errors.Is(err, seller.ErrNotReady) {
		t.Errorf("Ready before Start: %v, want ErrNotReady", err)
	}
	s.Start()
	probe("/readyz", http.StatusOK, "ready")

	// Request ids: a sane one is echoed, anything else is replaced.
	for _, tc := range []struct{ in, want string }{
		{"req-42.a_b:c", "req-42.a_b:c"},
		{"", ""},
		{"no spaces allowed", ""},
		{strings.Repeat("x", 129), ""},
	} {
		h := http.Header{}
		if tc.in != "" {
			h.Set(seller.RequestIDHeader, tc.in)
		}
		resp, _ := get(t, srv.URL+"/healthz", h)
		got := resp.Header.Get(seller.RequestIDHeader)
		switch {
		case tc.want != "" && got != tc.want:
			t.Errorf("X-Request-Id %q came back as %q", tc.in, got)
		case tc.want == "" && (got == "" || got == tc.in):
			t.Errorf("X-Request-Id %q: got %q, want a new id", tc.in, got)
		}
	}

	// A create with a key, a webhook URL and a payload marker, then its
	// replay.
	receiver := sellertest.NewReceiver(t)
	const key = "ops-test-key-0123456789"
	hook := receiver.URL("/hooks/ops-secret-path-4711")
	args := sellertest.CreateArgs(key, 5000, hook, "payload-marker-8d1f")
	cs := sellertest.Connect(t, srv.URL+"/mcp", sellertest.Token)
	for range 2 {
		if a := sellertest.Call(t, cs, "create_media_buy", args); a.IsError {
			t.Fatalf("create: %s", a.Raw)
		}
	}
	receiver.WaitFor(t, "/hooks/ops-secret-path-4711", 1)
	if a := sellertest.Call(t, cs, "create_media_buy", sellertest.CreateArgs(key, 6000, hook, "payload-marker-8d1f")); !a.IsError {
		t.Fatalf("conflict expected: %s", a.Raw)
	}
	resp, _ := get(t, srv.URL+"/mcp", nil) // no token
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /mcp without a token: %d", resp.StatusCode)
	}

	s.Close()
	probe("/readyz", http.StatusServiceUnavailable, "not ready: stopping")

	lines, text := logs.lines(t)
	for _, secret := range []string{sellertest.Token, key, hook, "ops-secret-path-4711", "payload-marker-8d1f", "acmeoutdoor"} {
		if strings.Contains(text, secret) {
			t.Errorf("the log contains %q:\n%s", secret, text)
		}
	}
	var calls []map[string]any
	probes, unauthorized := 0, 0
	for _, l := range lines {
		if l["msg"] != "request" {
			continue
		}
		if id, _ := l["request_id"].(string); id == "" {
			t.Errorf("access log line without request_id: %v", l)
		}
		if _, ok := l["duration_ms"].(float64); !ok {
			t.Errorf("access log line without duration_ms: %v", l)
		}
		switch {
		case l["tool"] == "create_media_buy":
			calls = append(calls, l)
		case l["path"] == "/healthz" || l["path"] == "/readyz":
			probes++
			if want := map[bool]string{true: "DEBUG", false: "INFO"}[l["status"] == 200.0]; l["level"] != want {
				t.Errorf("probe logged at %v, want %s: %v", l["level"], want, l)
			}
		case l["status"] == 401.0:
			unauthorized++
			if _, ok := l["principal"]; ok {
				t.Errorf("unauthenticated request logged with a principal: %v", l)
			}
		}
	}
	if probes != 8 || unauthorized != 1 {
		t.Errorf("%d probe lines and %d unauthorized, want 8 and 1", probes, unauthorized)
	}
	want := []struct{ outcome, adcpError string }{{"executed", ""}, {"replayed", ""}, {"conflict", "IDEMPOTENCY_CONFLICT"}}
	if len(calls) != len(want) {
		t.Fatalf("%d access log lines for create_media_buy, want %d:\n%s", len(calls), len(want), text)
	}
	for i, w := range want {
		l := calls[i]
		got := map[string]any{"method": l["method"], "path": l["path"], "status": l["status"], "principal": l["principal"],
			"mcp_method": l["mcp_method"], "idempotency": l["idempotency"], "adcp_error": l["adcp_error"], "level": l["level"]}
		exp := map[string]any{"method": "POST", "path": "/mcp", "status": 200.0, "principal": sellertest.Principal,
			"mcp_method": "tools/call", "idempotency": w.outcome, "adcp_error": nil, "level": "INFO"}
		if w.adcpError != "" {
			exp["adcp_error"] = w.adcpError
		}
		for k, v := range exp {
			if got[k] != v {
				t.Errorf("create %d: %s = %v, want %v (line %v)", i, k, got[k], v, l)
			}
		}
	}
}
