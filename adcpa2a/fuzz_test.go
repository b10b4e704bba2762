package adcpa2a_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpa2a"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/adcp-go/idempotency/memstore"
)

// Hostile JSON-RPC requests through the handler. Run with
//
//	go test ./adcpa2a -run '^$' -fuzz '^FuzzA2ARequest$' -fuzztime 60s
//
// Plain `go test` replays the seeds below and testdata/fuzz.

const (
	fuzzPrincipal = "fuzzer"
	fuzzMaxBody   = 16 << 10
)

// countingBackend counts the answers stored.
type countingBackend struct {
	backend.Backend
	completes atomic.Int64
}

func (b *countingBackend) Complete(ctx context.Context, c backend.Completion) error {
	b.completes.Add(1)
	return b.Backend.Complete(ctx, c)
}

// fuzzRig is a handler with a mutating and a read-only skill on a fresh
// memstore.
type fuzzRig struct {
	store   *memstore.Store
	backend *countingBackend
	handler http.Handler
	runs    atomic.Int64
	ran     atomic.Value // the id of the last skill whose runner was called
}

func newFuzzRig(t testing.TB) *fuzzRig {
	r := &fuzzRig{store: memstore.New(&memstore.Options{SweepInterval: -1})}
	t.Cleanup(func() { _ = r.store.Close() })
	r.backend = &countingBackend{Backend: r.store}
	g, err := idem.NewGuard(r.backend, &idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	type created struct {
		ID  string `json:"media_buy_id"`
		Key string `json:"key"`
	}
	create := adcp.Mutating(g, nil, func(_ context.Context, c *adcp.Call) (created, error) {
		var in struct {
			Budget   float64 `json:"budget"`
			Packages []struct {
				ProductID string `json:"product_id"`
			} `json:"packages"`
		}
		if err := c.Decode(&in); err != nil {
			return created{}, err
		}
		r.runs.Add(1)
		return created{ID: "mb_1", Key: c.Key}, nil
	})
	list := adcp.ReadOnly(nil, func(context.Context, *adcp.Call) (map[string]any, error) {
		return map[string]any{"media_buys": []any{}}, nil
	})
	noted := func(id string, run adcp.Runner) adcp.Runner {
		return func(ctx context.Context, t adcp.Task) adcp.Answer {
			r.ran.Store(id)
			return run(ctx, t)
		}
	}
	h, err := adcpa2a.NewHandler(adcpa2a.Agent{Name: "fuzz", Description: "fuzz", URL: "http://seller.test/a2a"},
		[]adcpa2a.Skill{{ID: "create_media_buy", Run: noted("create_media_buy", create)}, {ID: "get_media_buys", Run: noted("get_media_buys", list)}},
		&adcpa2a.Options{Principal: func(*http.Request) string { return fuzzPrincipal }, MaxBodyBytes: fuzzMaxBody})
	if err != nil {
		t.Fatal(err)
	}
	r.handler = h
	return r
}

// answer is a JSON-RPC response as the handler sent it.
type answer struct {
	status  int
	raw     []byte
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (r *fuzzRig) post(t *testing.T, body []byte) answer {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/a2a", bytes.NewReader(body))
	r.handler.ServeHTTP(rec, req)
	a := answer{status: rec.Code, raw: rec.Body.Bytes()}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("request %q: Content-Type %q", body, ct)
	}
	if err := json.Unmarshal(a.raw, &a); err != nil || a.JSONRPC != "2.0" || len(a.ID) == 0 || (a.Result == nil) == (a.Error == nil) {
		t.Fatalf("request %q: answer %q (HTTP %d) is not a JSON-RPC 2.0 response with a result or an error (%v)", body, a.raw, a.status, err)
	}
	if a.Error != nil && (a.Error.Code == nil || a.Error.Message == "") {
		t.Fatalf("request %q: error answer %q lacks a code or a message", body, a.raw)
	}
	if a.status != http.StatusOK && !(a.status == http.StatusRequestEntityTooLarge && len(body) > fuzzMaxBody && *a.Error.Code == -32600) {
		t.Fatalf("request %q: HTTP %d (%q)", body, a.status, a.raw)
	}
	return a
}

// taskAnswer is a task's one artifact and its DataPart.
type taskAnswer struct {
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Status struct {
		State string `json:"state"`
	} `json:"status"`
	Artifacts []struct {
		Name  string `json:"name"`
		Parts []struct {
			Kind string                     `json:"kind"`
			Data map[string]json.RawMessage `json:"data"`
		} `json:"parts"`
	} `json:"artifacts"`
}

func sendSeed(data string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"kind":"message","messageId":"m","role":"user","parts":[` + data + `]}}}`
}

// FuzzA2ARequest: whatever the request bytes, the handler answers with a
// well-formed JSON-RPC response (HTTP 413 only for an oversized body). A
// result is a completed task with one DataPart: a success of
// create_media_buy only when the request carried a valid key, which then
// holds the one answer stored (a resend replays it); a read's success,
// which stores nothing; or an AdCP INVALID_REQUEST, which stores nothing
// (the store is fresh). A JSON-RPC error runs and stores nothing. A skill
// that runs is the skill adcpa2a.Invoked names for the body.
func FuzzA2ARequest(f *testing.F) {
	in := `"input":{"idempotency_key":"` + key + `","budget":5,"context":{"id":"a"}}`
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `"x"`, `{"jsonrpc":"2.0"}`,
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy",` + in + `}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","parameters":{"idempotency_key":"` + key + `","packages":[{"product_id":"p"}]}}}`),
		sendSeed(`{"kind":"text","text":"hi"},{"kind":"data","data":{"skill":"get_media_buys","input":{}}}`),
		sendSeed(`{"kind":"text","text":"buy"}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy",` + in + `}},{"kind":"data","data":{"skill":"create_media_buy",` + in + `}}`),
		sendSeed(`{"kind":"data","data":{` + in + `}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","input":{"idempotency_key":12345678901234567}}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","input":{"budget":5}}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","input":{"idempotency_key":"` + key + `","budget":"five"}}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","input":{"idempotency_key":"` + key + `","a":1,"a":2}}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","input":{"idempotency_key":"` + key + `","s":"\ud800"}}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","input":{"idempotency_key":"` + key + `","a":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","input":{"idempotency_key":"` + key + `","brand":"` + strings.Repeat("x", fuzzMaxBody) + `"}}}`),
		sendSeed(`{"kind":"data","data":{"skill":"create_media_buy","skill":"get_media_buys","input":{}}}`),
		sendSeed(`{"kind":"file","file":{"uri":"https://x"}}`),
		sendSeed(`{"KIND":"data","DATA":{"skill":"get_media_buys","input":{}}}`),
		`{"jsonrpc":"2.0","id":{},"method":"message/send"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"id":"t"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"id":"t"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"message/stream","params":{}}`,
		`{"jsonrpc":"2.0","id":"x","method":"message/send","params":{"message":{"taskId":"t","parts":[{"kind":"data","data":{"skill":"get_media_buys","input":{}}}]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := newFuzzRig(t)
		a := r.post(t, body)
		if ran, _ := r.ran.Load().(string); ran != "" {
			if _, named := adcpa2a.Invoked(body); named != ran {
				t.Fatalf("request %q ran skill %q, but Invoked names %q", body, ran, named)
			}
		}
		stored := func() int64 { return r.backend.completes.Load() }
		if a.Error != nil {
			if r.runs.Load() != 0 || stored() != 0 {
				t.Fatalf("request %q answered the error %q but ran %d times and stored %d answers", body, a.raw, r.runs.Load(), stored())
			}
			return
		}
		var task taskAnswer
		if err := json.Unmarshal(a.Result, &task); err != nil || task.Kind != "task" || task.ID == "" || task.Status.State != "completed" ||
			len(task.Artifacts) != 1 || len(task.Artifacts[0].Parts) != 1 || task.Artifacts[0].Parts[0].Kind != "data" || task.Artifacts[0].Parts[0].Data == nil {
			t.Fatalf("request %q: result %s is not a completed task with one DataPart (%v)", body, a.Result, err)
		}
		data := task.Artifacts[0].Parts[0].Data
		switch task.Artifacts[0].Name {
		case "error":
			var e adcp.Error
			if err := json.Unmarshal(data["adcp_error"], &e); err != nil || e.Code != "INVALID_REQUEST" || e.Recovery != "correctable" {
				t.Fatalf("request %q: error answer %s, want an AdCP INVALID_REQUEST (the store is fresh)", body, a.Result)
			}
			if r.runs.Load() != 0 || stored() != 0 {
				t.Fatalf("request %q answered %s but ran %d times and stored %d answers", body, a.Result, r.runs.Load(), stored())
			}
		case "result":
			if _, isList := data["media_buys"]; isList {
				if r.runs.Load() != 0 || stored() != 0 {
					t.Fatalf("request %q: a read stored %d answers", body, stored())
				}
				return
			}
			var k string
			if err := json.Unmarshal(data["key"], &k); err != nil || idem.ValidateKey(k) != nil || string(data["replayed"]) != "false" {
				t.Fatalf("request %q succeeded (%s) without a valid idempotency_key, or not fresh", body, a.Result)
			}
			if e, err := r.store.Get(context.Background(), backend.Ref{Principal: fuzzPrincipal, Key: k}, zeroTime); err != nil || e == nil || e.Response == nil {
				t.Fatalf("request %q succeeded, but no answer is stored under its key (%v)", body, err)
			}
			if r.runs.Load() != 1 || stored() != 1 {
				t.Fatalf("request %q: %d runs, %d answers stored; want 1 and 1", body, r.runs.Load(), stored())
			}
			again := r.post(t, body)
			var task2 taskAnswer
			if again.Error != nil || json.Unmarshal(again.Result, &task2) != nil || len(task2.Artifacts) != 1 || len(task2.Artifacts[0].Parts) != 1 ||
				string(task2.Artifacts[0].Parts[0].Data["replayed"]) != "true" || r.runs.Load() != 1 {
				t.Fatalf("resend of %q = %s, want the replay of %s", body, again.raw, a.Result)
			}
		default:
			t.Fatalf("request %q: artifact named %q", body, task.Artifacts[0].Name)
		}
	})
}
