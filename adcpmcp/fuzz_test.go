package adcpmcp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/adcp-go/idempotency/idemtest"
	"github.com/adcp-go/idempotency/memstore"
)

// Hostile tool arguments through a Mutating handler (issue 7, part 4).
// Run with
//
//	go test ./adcpmcp -run '^$' -fuzz '^FuzzMutatingArguments$' -fuzztime 30s
//
// Plain `go test` replays the seeds below and testdata/fuzz.

const fuzzKey = "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50"

// rig is a Mutating handler on a fresh memstore, whose handler decodes
// the arguments as the seller does and counts its runs.
type rig struct {
	store   *memstore.Store
	backend *idemtest.CountingBackend
	handler mcp.ToolHandler
	runs    atomic.Int64
}

const fuzzPrincipal = "fuzzer"

func newRig(t testing.TB) *rig {
	r := &rig{store: memstore.New(&memstore.Options{SweepInterval: -1})}
	t.Cleanup(func() { _ = r.store.Close() })
	r.backend = &idemtest.CountingBackend{Backend: r.store}
	g, err := idem.NewGuard(r.backend, &idem.Config{Limiter: idem.Unlimited, MaxPayloadBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	opts := &adcpmcp.Options{Principal: func(context.Context, *mcp.CallToolRequest) string { return fuzzPrincipal }}
	r.handler = adcpmcp.Mutating(g, opts, func(_ context.Context, c *adcp.Call) (created, error) {
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
		return created{ID: "mb_1"}, nil
	})
	return r
}

// call runs the handler on raw arguments and decodes the answer.
func (r *rig) call(t testing.TB, args []byte) (isError bool, body map[string]json.RawMessage, raw []byte) {
	t.Helper()
	req := &mcp.CallToolRequest{Params: &mcp.CallToolParamsRaw{Name: "create_media_buy", Arguments: json.RawMessage(args)}}
	res, err := r.handler(context.Background(), req)
	if err != nil || res == nil {
		t.Fatalf("handler(%q) = %v, %v; want a tool result", args, res, err)
	}
	raw, ok := res.StructuredContent.(json.RawMessage)
	if !ok || !json.Valid(raw) {
		t.Fatalf("structuredContent %#v is not valid JSON", res.StructuredContent)
	}
	if len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != string(raw) {
		t.Fatalf("text content differs from structuredContent %s", raw)
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("structuredContent %s is not an object: %v", raw, err)
	}
	return res.IsError, body, raw
}

// members returns the exact (case-sensitive) top-level members of args, or
// nil if args is not a JSON object.
func members(args []byte) map[string]json.RawMessage {
	if len(bytes.TrimSpace(args)) == 0 {
		return map[string]json.RawMessage{}
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(args, &m) != nil || m == nil {
		return nil
	}
	return m
}

func compact(raw []byte) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// FuzzMutatingArguments: whatever the arguments, the handler answers with
// a tool result whose structuredContent is a JSON object. It succeeds only
// for an object whose exact member idempotency_key is a valid key and which
// canonicalises; it then stores one answer, which a resend replays.
// Anything else is an INVALID_REQUEST that stores nothing. The context
// echoed is exactly the member called context, if any.
func FuzzMutatingArguments(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `"x"`, `1`, `{"idempotency_key":null}`,
		`{"idempotency_key":"` + fuzzKey + `","budget":5,"context":{"id":"a"}}`,
		`{"idempotency_key":"` + fuzzKey + `","packages":[{"product_id":"p"}]}`,
		`{"idempotency_key":"` + fuzzKey + `","budget":"five"}`,
		`{"idempotency_key":"` + fuzzKey + `","budget":1,"budget":2}`,
		`{"idempotency_key":"` + fuzzKey + `","context":"text"}`,
		`{"idempotency_key":"` + fuzzKey + `","a":` + strings.Repeat("[", 129) + strings.Repeat("]", 129) + `}`,
		`{"idempotency_key":"` + strings.Repeat("k", 256) + `"}`,
		`{"idempotency_key":"clé-idempotente-ü-0001"}`,
		`{"idempotency_key":["` + fuzzKey + `"]}`,
		`{"idempotency_key":"` + fuzzKey + `","brand":"` + strings.Repeat("x", 64<<10) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, args []byte) {
		r := newRig(t)
		isError, body, raw := r.call(t, args)
		m := members(args)

		// The context echoed is the exact member "context".
		gotContext, echoed := body["context"]
		wantContext, hasContext := m["context"]
		if echoed != hasContext || (echoed && compact(gotContext) != compact(wantContext)) {
			t.Fatalf("arguments %q: answer %s echoes context %s, want the member \"context\" (%s)", args, raw, gotContext, wantContext)
		}

		if !isError {
			var key string
			if m == nil || json.Unmarshal(m["idempotency_key"], &key) != nil || idem.ValidateKey(key) != nil {
				t.Fatalf("arguments %q succeeded (%s) without a valid member \"idempotency_key\"", args, raw)
			}
			if e, err := r.store.Get(context.Background(), backend.Ref{Principal: fuzzPrincipal, Key: key}, time.Time{}); err != nil || e == nil || e.Response == nil {
				t.Fatalf("arguments %q succeeded, but no answer is stored under their idempotency_key %q (%v)", args, key, err)
			}
			if _, err := idem.CanonicalJSONSHA256(args); err != nil {
				t.Fatalf("arguments %q succeeded although they do not canonicalise: %v", args, err)
			}
			if r.runs.Load() != 1 || r.backend.Completions.Load() != 1 || string(body["replayed"]) != "false" {
				t.Fatalf("first call %s: %d runs, %d completions; want 1 and 1, replayed false", raw, r.runs.Load(), r.backend.Completions.Load())
			}
			isError, again, raw2 := r.call(t, args)
			if isError || string(again["replayed"]) != "true" || string(again["media_buy_id"]) != string(body["media_buy_id"]) || r.runs.Load() != 1 {
				t.Fatalf("resend of %q = %s, want the replay of %s", args, raw2, raw)
			}
			return
		}

		var e map[string]any
		if err := json.Unmarshal(body["adcp_error"], &e); err != nil {
			t.Fatalf("error answer %s has no adcp_error object", raw)
		}
		if e["code"] != "INVALID_REQUEST" || e["recovery"] != "correctable" {
			t.Fatalf("arguments %q: adcp_error %v, want a correctable INVALID_REQUEST (the store is fresh)", args, e)
		}
		if f, _ := e["field"].(string); f != "" && f != "idempotency_key" {
			t.Fatalf("adcp_error %v names field %q", e, f)
		}
		if r.runs.Load() != 0 || r.backend.Completions.Load() != 0 {
			t.Fatalf("arguments %q answered %s but ran the handler %d times and stored %d answers", args, raw, r.runs.Load(), r.backend.Completions.Load())
		}
		var key string
		if m != nil && json.Unmarshal(m["idempotency_key"], &key) == nil && idem.ValidateKey(key) == nil {
			if entry, err := r.store.Get(context.Background(), backend.Ref{Principal: fuzzPrincipal, Key: key}, time.Time{}); err != nil || entry != nil {
				t.Fatalf("arguments %q answered INVALID_REQUEST but left an entry %+v (%v)", args, entry, err)
			}
			msg, _ := e["message"].(string)
			if strings.Contains(msg, key) {
				t.Fatalf("adcp_error message %q echoes the key", msg)
			}
		}
	})
}

// Regression test: AdCP's field is "idempotency_key", matched exactly. The
// adapter reads the key (and context) with encoding/json into a struct,
// which also accepts any other capitalisation and lets the last of several
// spellings win; the canonical hash, on the other hand, excludes only the
// exact name. So {"IDEMPOTENCY_KEY": k} is run as if it carried key k
// (AdCP says it carries none), and {"idempotency_key": k1,
// "Idempotency_Key": k2} is stored under k2, a value the hash still counts
// as payload, while every other AdCP component (the buyer, a proxy, a log
// pipeline) takes k1 as the key.
func TestKeyMemberNameIsCaseSensitive(t *testing.T) {
	const other = "another-key-0000000001"
	t.Run("only another capitalisation", func(t *testing.T) {
		r := newRig(t)
		isError, body, raw := r.call(t, []byte(`{"IDEMPOTENCY_KEY":"`+fuzzKey+`","budget":5}`))
		var e map[string]any
		_ = json.Unmarshal(body["adcp_error"], &e)
		if !isError || e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" || r.runs.Load() != 0 {
			t.Fatalf("arguments without the member idempotency_key answered %s after %d runs; want INVALID_REQUEST on field idempotency_key", raw, r.runs.Load())
		}
	})
	t.Run("two capitalisations", func(t *testing.T) {
		r := newRig(t)
		if isError, _, raw := r.call(t, []byte(`{"idempotency_key":"`+fuzzKey+`","Idempotency_Key":"`+other+`","budget":5}`)); isError {
			t.Fatalf("first call: %s", raw)
		}
		ctx := context.Background()
		mine, _ := r.store.Get(ctx, backend.Ref{Principal: fuzzPrincipal, Key: fuzzKey}, time.Time{})
		theirs, _ := r.store.Get(ctx, backend.Ref{Principal: fuzzPrincipal, Key: other}, time.Time{})
		if mine == nil || theirs != nil {
			t.Fatalf("stored under idempotency_key: %v, under the Idempotency_Key member's value: %v; want the answer under idempotency_key only", mine != nil, theirs != nil)
		}
	})
	t.Run("context in another capitalisation", func(t *testing.T) {
		r := newRig(t)
		_, body, raw := r.call(t, []byte(`{"idempotency_key":"`+fuzzKey+`","Context":{"x":1},"budget":5}`))
		if _, ok := body["context"]; ok {
			t.Fatalf("answer %s echoes the member Context as context", raw)
		}
	})
}
