package adcpmcp_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

type created struct {
	ID      string `json:"media_buy_id"`
	Context string `json:"context,omitempty"` // a handler bug the adapter must not store
	Bad     any    `json:"bad,omitempty"`     // set to a value JSON cannot encode
}

func session(t *testing.T, principal string) (*mcp.ClientSession, *int) {
	t.Helper()
	store := memstore.New(nil)
	t.Cleanup(func() { store.Close() })
	g, err := idem.NewGuard(store, &idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	s := mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	opts := &adcpmcp.Options{Principal: func(context.Context, *mcp.CallToolRequest) string { return principal }}
	adcpmcp.AddTool(s, &mcp.Tool{Name: "create_media_buy", InputSchema: map[string]any{
		"type": "object", "required": []any{"idempotency_key", "packages"},
	}}, adcpmcp.Mutating(g, opts, func(_ context.Context, c *adcp.Call) (created, error) {
		var in struct{ Budget int }
		if err := c.Decode(&in); err != nil {
			return created{}, err
		}
		if in.Budget < 0 {
			return created{}, &adcp.Error{Code: "INVALID_REQUEST", Message: "budget must not be negative", Recovery: "correctable", Field: "budget"}
		}
		if in.Budget == 13 {
			return created{}, errors.New("database password is hunter2")
		}
		runs++
		if in.Budget == 99 {
			return created{ID: "mb_99", Bad: make(chan int)}, nil // the work is done; the answer cannot be encoded
		}
		return created{ID: "mb_1", Context: "leak"}, nil
	}))
	ct, st := mcp.NewInMemoryTransports()
	if _, err := s.Connect(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "c", Version: "1"}, nil).Connect(context.Background(), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, &runs
}

func call(t *testing.T, cs *mcp.ClientSession, args map[string]any) (bool, map[string]any) {
	isErr, body, _ := callRaw(t, cs, args)
	return isErr, body
}

// callRaw also returns the text content, as sent.
func callRaw(t *testing.T, cs *mcp.ClientSession, args map[string]any) (bool, map[string]any, string) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "create_media_buy", Arguments: args})
	if err != nil {
		t.Fatalf("CallTool: %v", err)
	}
	text := res.Content[0].(*mcp.TextContent).Text
	raw, _ := json.Marshal(res.StructuredContent)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("structuredContent %s: %v", raw, err)
	}
	return res.IsError, body, text
}

func TestMutatingAnswers(t *testing.T) {
	cs, runs := session(t, "agent-1")
	key := "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50"

	// The schema marked idempotency_key required; AddTool relaxed it, so the
	// call reaches the handler and gets AdCP's answer.
	isErr, body := call(t, cs, map[string]any{"budget": 5, "context": map[string]any{"id": "m"}})
	e, _ := body["adcp_error"].(map[string]any)
	if !isErr || e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" || e["recovery"] != "correctable" || body["context"].(map[string]any)["id"] != "m" {
		t.Fatalf("missing key: isError=%v %v", isErr, body)
	}

	isErr, body = call(t, cs, map[string]any{"idempotency_key": key, "budget": 5, "context": map[string]any{"id": "a"}})
	if isErr || body["media_buy_id"] != "mb_1" || body["replayed"] != false || body["context"].(map[string]any)["id"] != "a" {
		t.Fatalf("first call: %v", body)
	}
	isErr, body, text := callRaw(t, cs, map[string]any{"idempotency_key": key, "budget": 5, "context": map[string]any{"id": "b"}})
	if isErr || body["media_buy_id"] != "mb_1" || body["replayed"] != true || body["context"].(map[string]any)["id"] != "b" {
		t.Fatalf("replay: %v", body)
	}
	if strings.Contains(text, "leak") || strings.Count(text, `"context"`) != 1 {
		t.Fatalf("the handler's own context field was stored: %s", text)
	}
	// The conflict body is exactly what AdCP allows: code, message and
	// (from 3.1) recovery in adcp_error; beside it only the envelope's
	// status and adcp_version, and the request's own context.
	isErr, body = call(t, cs, map[string]any{"idempotency_key": key, "budget": 6, "context": map[string]any{"id": "c"}})
	e, _ = body["adcp_error"].(map[string]any)
	if !isErr || e["code"] != "IDEMPOTENCY_CONFLICT" || e["message"] == "" || e["recovery"] != "correctable" || len(e) != 3 {
		t.Fatalf("conflict: %v, want code, message and recovery only", body)
	}
	if len(body) != 4 || body["status"] != "failed" || body["adcp_version"] != "3.2" || body["context"].(map[string]any)["id"] != "c" {
		t.Fatalf("conflict answer: %v, want adcp_error, status, adcp_version and the context only", body)
	}
	// A client of AdCP 3.0 (adcp_major_version without adcp_version) gets
	// 3.0's conflict: code and message only, beside the envelope's status.
	isErr, body = call(t, cs, map[string]any{"idempotency_key": key, "budget": 6, "adcp_major_version": 3})
	e, _ = body["adcp_error"].(map[string]any)
	if !isErr || e["code"] != "IDEMPOTENCY_CONFLICT" || len(e) != 2 || len(body) != 2 || body["status"] != "failed" {
		t.Fatalf("3.0 conflict: %v, want code and message only", body)
	}
	if *runs != 1 {
		t.Fatalf("handler ran %d times, want 1", *runs)
	}

	isErr, body = call(t, cs, map[string]any{"idempotency_key": key + "-2", "budget": -1})
	if e, _ := body["adcp_error"].(map[string]any); !isErr || e["code"] != "INVALID_REQUEST" || e["field"] != "budget" {
		t.Fatalf("handler's AdCP error: %v", body)
	}
	isErr, body = call(t, cs, map[string]any{"idempotency_key": key + "-3", "budget": 13})
	raw, _ := json.Marshal(body)
	if e, _ := body["adcp_error"].(map[string]any); !isErr || e["code"] != "SERVICE_UNAVAILABLE" || strings.Contains(string(raw), "hunter2") {
		t.Fatalf("handler's internal error: %s", raw)
	}
	// Neither error was cached: the same keys run now.
	if isErr, body = call(t, cs, map[string]any{"idempotency_key": key + "-2", "budget": 7}); isErr || body["replayed"] != false {
		t.Fatalf("retry after an error: %v", body)
	}
}

// A handler whose work is done but whose answer cannot be encoded must not
// run again on retries: each gets CONFIGURATION_ERROR.
func TestMutatingUnencodableAnswerRunsOnce(t *testing.T) {
	cs, runs := session(t, "agent-1")
	key := "5d0f2b7c-unencodable-0001"
	for i := range 4 {
		isErr, body := call(t, cs, map[string]any{"idempotency_key": key, "budget": 99})
		e, _ := body["adcp_error"].(map[string]any)
		if !isErr || e["code"] != "CONFIGURATION_ERROR" || e["recovery"] != "terminal" {
			t.Fatalf("call %d: %v, want CONFIGURATION_ERROR (terminal)", i+1, body)
		}
	}
	if *runs != 1 {
		t.Fatalf("the handler ran %d times over 4 calls, want 1", *runs)
	}
}

// A key that is not a JSON string is named as such, not as too short.
func TestNonStringKey(t *testing.T) {
	cs, runs := session(t, "agent-1")
	for _, key := range []any{12345678901234567, true, []any{"0b4c1e9a-7d2f-4f65"}, map[string]any{"k": "v"}} {
		isErr, body := call(t, cs, map[string]any{"idempotency_key": key, "budget": 5})
		e, _ := body["adcp_error"].(map[string]any)
		if !isErr || e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" || e["message"] != "idempotency_key must be a string" {
			t.Fatalf("key %v: %v, want INVALID_REQUEST \"idempotency_key must be a string\"", key, body)
		}
	}
	if *runs != 0 {
		t.Fatalf("the handler ran %d times", *runs)
	}
}

func TestMissingPrincipalFailsClosed(t *testing.T) {
	cs, runs := session(t, "")
	isErr, body := call(t, cs, map[string]any{"idempotency_key": "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50", "budget": 5})
	if e, _ := body["adcp_error"].(map[string]any); !isErr || e["code"] != "AUTH_REQUIRED" || *runs != 0 {
		t.Fatalf("no principal: %v (runs %d)", body, *runs)
	}
}

func TestAcceptJSON(t *testing.T) {
	var seen string
	h := adcpmcp.AcceptJSON(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = r.Header.Get("Accept") }))
	for accept, want := range map[string]string{
		"application/json":                    "application/json, text/event-stream",
		"":                                    "application/json, text/event-stream",
		"application/json, text/event-stream": "application/json, text/event-stream",
	} {
		r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if seen != want {
			t.Errorf("Accept %q became %q, want %q", accept, seen, want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/mcp", nil)
	r.Header.Set("Accept", "text/event-stream")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if seen != "text/event-stream" {
		t.Errorf("GET's Accept changed to %q", seen)
	}
}
