// Package sellertest drives the reference seller over real MCP (the Go SDK's
// streamable HTTP client) or real A2A (the a2a-go client, a2a.go) through
// the idempotency storyboard's scenarios and more. The memory-mode tests
// (package seller) and the Postgres-mode tests (the integration module) run
// the same scenarios, over each transport, and the cross-transport ones
// (crosstransport.go).
package sellertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
)

// Token and Principal are the credentials of the main test caller; Token2
// belongs to OtherPrincipal.
const (
	Token          = "sk_test_alpha_0123456789abcdef"
	Principal      = "buyer-alpha"
	Token2         = "sk_test_beta_0123456789abcdef0"
	OtherPrincipal = "buyer-beta"
)

// Tokens is the token map the scenarios expect the seller to accept.
func Tokens() map[string]string { return map[string]string{Token: Principal, Token2: OtherPrincipal} }

// Start serves s on a loopback port for the test's duration and returns the
// MCP URL.
func Start(t testing.TB, s *seller.Seller) string {
	t.Helper()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// Receiver is a webhook receiver that records deliveries per URL path.
type Receiver struct {
	srv *httptest.Server

	mu         sync.Mutex
	deliveries map[string][]map[string]any
	raw        map[string][]*http.Request // with the body readable again
	status     int                        // answered to every delivery; 0 means 204
	arrived    chan struct{}
}

// NewReceiver starts a receiver on a loopback port.
func NewReceiver(t testing.TB) *Receiver {
	r := &Receiver{deliveries: map[string][]map[string]any{}, raw: map[string][]*http.Request{}, arrived: make(chan struct{}, 1024)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		kept := req.Clone(context.Background())
		kept.Body = io.NopCloser(bytes.NewReader(body))
		r.mu.Lock()
		status := r.status
		if status == 0 || status/100 == 2 {
			r.deliveries[req.URL.Path] = append(r.deliveries[req.URL.Path], m)
			r.raw[req.URL.Path] = append(r.raw[req.URL.Path], kept)
		}
		r.mu.Unlock()
		if status == 0 {
			status = http.StatusNoContent
		}
		w.WriteHeader(status)
		if status/100 == 2 {
			r.arrived <- struct{}{}
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// URL returns the receiver's URL for path.
func (r *Receiver) URL(path string) string { return r.srv.URL + path }

// Requests returns the delivered requests to path as received (headers
// and body), for checking signatures.
func (r *Receiver) Requests(path string) []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.raw[path]...)
}

// SetStatus makes the receiver answer every delivery with status (and not
// record it unless it is 2xx).
func (r *Receiver) SetStatus(status int) {
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
}

// Deliveries returns the bodies delivered to path so far.
func (r *Receiver) Deliveries(path string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.deliveries[path]...)
}

// WaitFor waits until path has received n deliveries, or fails the test
// after a generous bound.
func (r *Receiver) WaitFor(t testing.TB, path string, n int) []map[string]any {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if d := r.Deliveries(path); len(d) >= n {
			return d
		}
		select {
		case <-r.arrived:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("webhook receiver: %d deliveries to %s, waited for %d", len(r.Deliveries(path)), path, n)
		}
	}
}

// Connect opens an MCP client session to url with token.
func Connect(t testing.TB, url, token string) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: bearer{token: token}}
	c := mcp.NewClient(&mcp.Implementation{Name: "sellertest", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("MCP connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// Answer is a decoded tool result.
type Answer struct {
	IsError bool
	Body    map[string]any // structuredContent
	Raw     string         // structuredContent as sent
}

// Call calls tool with args and decodes the answer, failing the test on a
// protocol error.
func Call(t testing.TB, cs Client, tool string, args map[string]any) Answer {
	t.Helper()
	a, err := TryCall(cs, tool, args)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TryCall is Call for goroutines: it returns the error instead.
func TryCall(cs Client, tool string, args map[string]any) (Answer, error) {
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return Answer{}, fmt.Errorf("%s: protocol error %v (AdCP errors must be tool results)", tool, err)
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return Answer{}, err
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		return Answer{}, fmt.Errorf("%s: structuredContent is not an object: %s", tool, raw)
	}
	return Answer{IsError: res.IsError, Body: body, Raw: string(raw)}, nil
}

// ErrorObject returns adcp_error of an error answer.
func (a Answer) ErrorObject(t testing.TB) map[string]any {
	t.Helper()
	e, ok := a.Body["adcp_error"].(map[string]any)
	if !a.IsError || !ok {
		t.Fatalf("want an error answer with adcp_error, got isError=%v %s", a.IsError, a.Raw)
	}
	return e
}

// CreateArgs is a create_media_buy request shaped as the bundled AdCP
// 3.0.6 idempotency storyboard sends it: pinned to AdCP 3.0
// (adcp_major_version 3), with a webhook registration of a URL only when
// pushURL is set.
func CreateArgs(key string, budget float64, pushURL, correlation string) map[string]any {
	args := map[string]any{
		"adcp_major_version": 3,
		"account":            map[string]any{"brand": map[string]any{"domain": "acmeoutdoor.example"}, "operator": "pinnacle-agency.example"},
		"brand":              map[string]any{"domain": "acmeoutdoor.example"},
		"start_time":         "2026-06-01T00:00:00Z",
		"end_time":           "2026-06-30T23:59:59Z",
		"packages":           []any{map[string]any{"product_id": "test-product", "budget": budget, "pricing_option_id": "test-pricing"}},
		"context":            map[string]any{"correlation_id": correlation},
	}
	if key != "" {
		args["idempotency_key"] = key
	}
	if pushURL != "" {
		args["push_notification_config"] = map[string]any{"url": pushURL}
	}
	return args
}

var eventKey = regexp.MustCompile(`^[A-Za-z0-9_.:-]{16,255}$`)

// Env is what the scenarios need besides the seller's URL.
type Env struct {
	// URL is the seller's MCP endpoint (…/mcp), or its A2A endpoint
	// (…/a2a) to run the scenarios over A2A (see OverA2A).
	URL      string
	Receiver *Receiver
	// Count returns how many media buys principal has.
	Count func(principal string) int
}

func newKey(prefix string) string {
	return fmt.Sprintf("%s-%d-0123456789", prefix, time.Now().UnixNano())
}

// OverA2A is env with the seller's A2A endpoint in place of its MCP one:
// the scenarios then run over A2A.
func (e Env) OverA2A() Env {
	e.URL = baseURL(e.URL) + "/a2a"
	return e
}

// Run runs every scenario against env.
func Run(t *testing.T, env Env) {
	t.Run("Storyboard", func(t *testing.T) { storyboard(t, env) })
	if IsA2A(env.URL) {
		t.Run("BareMessageSend", func(t *testing.T) { bareMessageSend(t, env) })
	} else {
		t.Run("BareJSONToolsCall", func(t *testing.T) { bareJSONCall(t, env) })
	}
	t.Run("ConcurrentSameKey", func(t *testing.T) { concurrentSameKey(t, env) })
	t.Run("PrincipalIsolation", func(t *testing.T) { isolation(t, env) })
}

func storyboard(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	before := env.Count(Principal)

	capa := Call(t, cs, "get_adcp_capabilities", map[string]any{"context": map[string]any{"correlation_id": "caps"}})
	idemCap, _ := capa.Body["adcp"].(map[string]any)["idempotency"].(map[string]any)
	if capa.IsError || idemCap["supported"] != true || idemCap["replay_ttl_seconds"] == nil || capa.Body["context"].(map[string]any)["correlation_id"] != "caps" {
		t.Fatalf("get_adcp_capabilities = %s", capa.Raw)
	}

	for name, key := range map[string]any{"missing": nil, "short": "too-short", "bad characters": "spaces are not allowed here"} {
		args := CreateArgs("", 5000, "", "missing-"+name)
		if key != nil {
			args["idempotency_key"] = key
		}
		a := Call(t, cs, "create_media_buy", args)
		e := a.ErrorObject(t)
		if e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" || e["recovery"] != "correctable" {
			t.Fatalf("%s key: adcp_error = %v", name, e)
		}
		if a.Body["context"].(map[string]any)["correlation_id"] != "missing-"+name {
			t.Fatalf("%s key: context not echoed: %s", name, a.Raw)
		}
	}

	key := newKey("storyboard")
	hookPath := "/step/create_media_buy_initial/op-" + key
	push := env.Receiver.URL(hookPath)
	first := Call(t, cs, "create_media_buy", CreateArgs(key, 5000, push, "initial"))
	if first.IsError || first.Body["media_buy_id"] == nil || first.Body["replayed"] != false || first.Body["idempotency_key"] != key {
		t.Fatalf("initial create = %s", first.Raw)
	}
	if first.Body["context"].(map[string]any)["correlation_id"] != "initial" {
		t.Fatalf("initial create: context = %v", first.Body["context"])
	}
	replay := Call(t, cs, "create_media_buy", CreateArgs(key, 5000, push, "replay"))
	if replay.IsError || replay.Body["media_buy_id"] != first.Body["media_buy_id"] || replay.Body["replayed"] != true ||
		replay.Body["context"].(map[string]any)["correlation_id"] != "replay" {
		t.Fatalf("replay = %s, want media buy %v replayed with the replay's context", replay.Raw, first.Body["media_buy_id"])
	}
	for _, k := range []string{"media_buy_id", "status", "confirmed_at", "packages", "idempotency_key"} {
		if fmt.Sprint(replay.Body[k]) != fmt.Sprint(first.Body[k]) {
			t.Fatalf("replay differs from the first answer in %s: %v vs %v", k, replay.Body[k], first.Body[k])
		}
	}

	conflictArgs := CreateArgs(key, 25000, "", "conflict")
	conflictArgs["account"] = map[string]any{"brand": map[string]any{"domain": "test.example"}, "operator": "test.example", "sandbox": true}
	conflictArgs["end_time"] = "2026-09-30T23:59:59Z"
	conflict := Call(t, cs, "create_media_buy", conflictArgs)
	e := conflict.ErrorObject(t)
	if e["code"] != "IDEMPOTENCY_CONFLICT" || e["message"] == "" || len(e) != 2 {
		t.Fatalf("conflict adcp_error = %v, want code and message only (AdCP 3.0)", e)
	}
	if conflict.Body["context"].(map[string]any)["correlation_id"] != "conflict" || strings.Contains(conflict.Raw, "5000") {
		t.Fatalf("conflict answer = %s", conflict.Raw)
	}

	fresh := Call(t, cs, "create_media_buy", CreateArgs(newKey("fresh"), 5000, "", "fresh"))
	if fresh.IsError || fresh.Body["media_buy_id"] == first.Body["media_buy_id"] || fresh.Body["replayed"] == true {
		t.Fatalf("fresh key = %s", fresh.Raw)
	}
	list := Call(t, cs, "get_media_buys", map[string]any{
		"media_buy_ids": []any{first.Body["media_buy_id"], fresh.Body["media_buy_id"]},
		"context":       map[string]any{"correlation_id": "list"},
	})
	if buys, _ := list.Body["media_buys"].([]any); list.IsError || len(buys) != 2 {
		t.Fatalf("get_media_buys = %s, want the two buys", list.Raw)
	}
	if got := env.Count(Principal) - before; got != 2 {
		t.Fatalf("%d media buys created, want 2 (initial + fresh)", got)
	}

	// The webhook: one event for the initial buy, with a valid key, none for
	// the replay. A later event to another path proves the dispatcher has
	// passed the point where a replay's event would have been sent.
	events := env.Receiver.WaitFor(t, hookPath, 1)
	if k, _ := events[0]["idempotency_key"].(string); !eventKey.MatchString(k) || events[0]["status"] != "completed" {
		t.Fatalf("webhook body = %v", events[0])
	}
	if r, _ := events[0]["result"].(map[string]any); r["media_buy_id"] != first.Body["media_buy_id"] {
		t.Fatalf("webhook result = %v, want media buy %v", events[0]["result"], first.Body["media_buy_id"])
	}
	marker := "/step/marker/" + newKey("m")
	if a := Call(t, cs, "create_media_buy", CreateArgs(newKey("marker"), 1, env.Receiver.URL(marker), "marker")); a.IsError {
		t.Fatalf("marker create = %s", a.Raw)
	}
	env.Receiver.WaitFor(t, marker, 1)
	if n := len(env.Receiver.Deliveries(hookPath)); n != 1 {
		t.Fatalf("%d webhook deliveries for one media buy, want 1", n)
	}
	for _, a := range []Answer{capa, first, replay, conflict, fresh, list} {
		if strings.Contains(a.Raw, Token) {
			t.Fatalf("an answer echoes the bearer token: %s", a.Raw)
		}
	}
}

// bareJSONCall is the runner's missing-key probe: tools/call without
// initialize, Accept: application/json only.
func bareJSONCall(t *testing.T, env Env) {
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_media_buy","arguments":{"packages":[{"product_id":"p","budget":1}],"context":{"correlation_id":"probe"}}}}`
	req, _ := http.NewRequest(http.MethodPost, env.URL, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("bare tools/call: HTTP %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	var msg struct {
		Result struct {
			IsError           bool `json:"isError"`
			StructuredContent struct {
				Error   map[string]any `json:"adcp_error"`
				Context map[string]any `json:"context"`
			} `json:"structuredContent"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil || !msg.Result.IsError || msg.Result.StructuredContent.Error["code"] != "INVALID_REQUEST" ||
		msg.Result.StructuredContent.Context["correlation_id"] != "probe" {
		t.Fatalf("bare tools/call answer: %s", raw)
	}
	// Without a token: 401, never a shared anonymous namespace.
	req, _ = http.NewRequest(http.MethodPost, env.URL, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated call: HTTP %d, want 401", resp2.StatusCode)
	}
}

func concurrentSameKey(t *testing.T, env Env) {
	before := env.Count(Principal)
	CreateConcurrently(t, []string{env.URL}, newKey("concurrent"), 8)
	if got := env.Count(Principal) - before; got != 1 {
		t.Fatalf("%d media buys from 8 concurrent creates with one key, want 1", got)
	}
}

// CreateConcurrently sends n create_media_buy calls with one key at once,
// spread over the sellers at urls (MCP or A2A endpoints, see Dial), and fails the test unless every caller
// got the same media buy. It returns that media buy's id.
func CreateConcurrently(t *testing.T, urls []string, key string, n int) any {
	t.Helper()
	ids := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		cs := Dial(t, urls[i%len(urls)], Token)
		wg.Go(func() {
			a, err := TryCall(cs, "create_media_buy", CreateArgs(key, 5000, "", fmt.Sprint("c", i)))
			if err != nil || a.IsError {
				t.Errorf("concurrent create %d: %v %s", i, err, a.Raw)
				return
			}
			ids[i] = a.Body["media_buy_id"]
		})
	}
	wg.Wait()
	for i := range n {
		if ids[i] != ids[0] {
			t.Fatalf("concurrent creates with one key answered %v and %v", ids[0], ids[i])
		}
	}
	return ids[0]
}

// EnvFor serves s for the test and returns the scenarios' environment.
func EnvFor(t *testing.T, s *seller.Seller) Env {
	return Env{
		URL:      Start(t, s),
		Receiver: NewReceiver(t),
		Count: func(p string) int {
			n, err := s.MediaBuyCount(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			return n
		},
	}
}

func isolation(t *testing.T, env Env) {
	key := newKey("shared")
	a := Call(t, Dial(t, env.URL, Token), "create_media_buy", CreateArgs(key, 5000, "", "a"))
	b := Call(t, Dial(t, env.URL, Token2), "create_media_buy", CreateArgs(key, 7000, "", "b"))
	if a.IsError || b.IsError || a.Body["media_buy_id"] == b.Body["media_buy_id"] || b.Body["replayed"] == true {
		t.Fatalf("two principals, one key: %s / %s; want two fresh media buys", a.Raw, b.Raw)
	}
	list := Call(t, Dial(t, env.URL, Token2), "get_media_buys", map[string]any{"media_buy_ids": []any{a.Body["media_buy_id"]}})
	if buys, _ := list.Body["media_buys"].([]any); len(buys) != 0 {
		t.Fatalf("%s sees %s's media buy: %s", OtherPrincipal, Principal, list.Raw)
	}
}
