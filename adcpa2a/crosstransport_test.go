package adcpa2a_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
)

// mcpSession serves the seller's create_media_buy runner as an MCP tool,
// for principal, over the MCP SDK's in-memory transport.
func mcpSession(t testing.TB, s *seller, principal string) *mcp.ClientSession {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "seller", Version: "1"}, nil)
	opts := &adcpmcp.Options{Principal: func(context.Context, *mcp.CallToolRequest) string { return principal }}
	adcpmcp.AddTool(server, &mcp.Tool{Name: "create_media_buy"}, adcpmcp.Handler(opts, s.create))
	ct, st := mcp.NewInMemoryTransports()
	if _, err := server.Connect(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "buyer", Version: "1"}, nil).Connect(context.Background(), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func callMCP(cs *mcp.ClientSession, args map[string]any) (isError bool, body map[string]any, err error) {
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "create_media_buy", Arguments: args})
	if err != nil {
		return false, nil, err
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return false, nil, err
	}
	return res.IsError, body, json.Unmarshal(raw, &body)
}

func mustCallMCP(t testing.TB, cs *mcp.ClientSession, args map[string]any) map[string]any {
	t.Helper()
	isError, body, err := callMCP(cs, args)
	if err != nil {
		t.Fatalf("tools/call: %v", err)
	}
	if isError != (adcpError(body) != nil) {
		t.Fatalf("isError %v with %v", isError, body)
	}
	return body
}

// One runner behind an MCP tool and an A2A skill is one key space: a key
// first used over MCP replays over A2A, and the other way round; a changed
// payload conflicts across transports too.
func TestCrossTransportReplay(t *testing.T) {
	s := newSeller(t, nil)
	cs := mcpSession(t, s, "agent-a")
	b := newBuyer(t, serve(t, s, nil), "tok-a")

	argsFor := func(k string, ctxID string) map[string]any {
		return map[string]any{"idempotency_key": k, "budget": 5, "packages": []any{map[string]any{"product_id": "p1"}}, "context": map[string]any{"id": ctxID}}
	}

	mcpFirst := mustCallMCP(t, cs, argsFor(key, "mcp"))
	_, overA2A := b.invoke(t, "create_media_buy", "parameters", argsFor(key, "a2a"))
	if mcpFirst["replayed"] != false || overA2A["replayed"] != true || overA2A["media_buy_id"] != mcpFirst["media_buy_id"] || compactJSON(overA2A["context"]) != `{"id":"a2a"}` {
		t.Fatalf("MCP first %v, then A2A %v: want the A2A call to replay the MCP answer", mcpFirst, overA2A)
	}

	key2 := key + "-reverse"
	_, a2aFirst := b.invoke(t, "create_media_buy", "input", argsFor(key2, "a2a"))
	overMCP := mustCallMCP(t, cs, argsFor(key2, "mcp"))
	if a2aFirst["replayed"] != false || overMCP["replayed"] != true || overMCP["media_buy_id"] != a2aFirst["media_buy_id"] || compactJSON(overMCP["context"]) != `{"id":"mcp"}` {
		t.Fatalf("A2A first %v, then MCP %v: want the MCP call to replay the A2A answer", a2aFirst, overMCP)
	}

	changed := argsFor(key, "x")
	changed["budget"] = 6
	_, conflict := b.invoke(t, "create_media_buy", "input", changed)
	if !conflictOnly(adcpError(conflict)) {
		t.Fatalf("A2A with another payload under an MCP key: %v", conflict)
	}
	if e := adcpError(mustCallMCP(t, cs, changed)); !conflictOnly(e) {
		t.Fatalf("MCP with another payload: %v", e)
	}
	if n := s.runs.Load(); n != 2 {
		t.Fatalf("the work ran %d times for two keys", n)
	}
}

// Many concurrent calls with one key, half over MCP and half over A2A, run
// the work once.
func TestCrossTransportConcurrentOneRun(t *testing.T) {
	const callers = 64
	args := map[string]any{"idempotency_key": key, "budget": 5}

	type outcome struct {
		transport string
		body      map[string]any
		err       error
	}
	// race starts the callers on s, half over each transport, and returns
	// their outcomes as they come, and a caller of both transports.
	race := func(t *testing.T, s *seller) (<-chan outcome, *mcp.ClientSession, *buyer) {
		srv := serve(t, s, nil)
		sessions := make([]*mcp.ClientSession, callers/2)
		buyers := make([]*buyer, callers/2)
		for i := range sessions {
			sessions[i] = mcpSession(t, s, "agent-a")
			buyers[i] = newBuyer(t, srv, "tok-a")
		}
		out := make(chan outcome, callers)
		for i := range callers {
			go func() {
				if i%2 == 0 {
					_, body, err := callMCP(sessions[i/2], args)
					out <- outcome{"mcp", body, err}
					return
				}
				_, body, err := buyers[i/2].tryInvoke("create_media_buy", "parameters", args)
				out <- outcome{"a2a", body, err}
			}()
		}
		return out, sessions[0], buyers[0]
	}
	// check reads n outcomes: answers of the one media buy, or
	// IDEMPOTENCY_IN_FLIGHT. It returns how many were fresh, replays and
	// in flight.
	check := func(t *testing.T, out <-chan outcome, n int, ids map[any]bool) (fresh, replays, inFlight int) {
		for range n {
			o := <-out
			if o.err != nil {
				t.Fatalf("%s call: %v", o.transport, o.err)
			}
			switch e := adcpError(o.body); {
			case e == nil && o.body["replayed"] == false:
				fresh++
				ids[o.body["media_buy_id"]] = true
			case e == nil && o.body["replayed"] == true:
				replays++
				ids[o.body["media_buy_id"]] = true
			case e["code"] == "IDEMPOTENCY_IN_FLIGHT":
				inFlight++
			default:
				t.Fatalf("%s call answered %v", o.transport, o.body)
			}
		}
		return fresh, replays, inFlight
	}
	// after checks that both transports now replay the one answer.
	after := func(t *testing.T, cs *mcp.ClientSession, b *buyer, ids map[any]bool) {
		_, body := b.invoke(t, "create_media_buy", "input", args)
		mcpBody := mustCallMCP(t, cs, args)
		if body["replayed"] != true || mcpBody["replayed"] != true || fmt.Sprint(body["media_buy_id"]) != fmt.Sprint(mcpBody["media_buy_id"]) || !ids[body["media_buy_id"]] {
			t.Fatalf("after the race: A2A %v, MCP %v", body, mcpBody)
		}
	}

	// The default policy: duplicates wait for the first and replay it.
	t.Run("wait then replay", func(t *testing.T) {
		s := newSeller(t, nil)
		out, cs, b := race(t, s)
		ids := map[any]bool{}
		fresh, replays, inFlight := check(t, out, callers, ids)
		if n := s.runs.Load(); n != 1 || fresh != 1 || len(ids) != 1 {
			t.Fatalf("%d runs, %d fresh answers, media buys %v (replays %d, in flight %d); want exactly one run", n, fresh, ids, replays, inFlight)
		}
		after(t, cs, b, ids)
	})

	// RejectInFlight, with the one run held until every other caller has
	// been answered: all of them, over either transport, hear that the key
	// is in flight.
	t.Run("reject in flight", func(t *testing.T) {
		s := newSeller(t, &idem.Config{Limiter: idem.Unlimited, Duplicates: idem.RejectInFlight})
		s.gate = make(chan struct{})
		out, cs, b := race(t, s)
		ids := map[any]bool{}
		fresh, replays, inFlight := check(t, out, callers-1, ids)
		if fresh != 0 || replays != 0 || inFlight != callers-1 {
			t.Fatalf("while the run was held: %d fresh, %d replays, %d in flight; want %d in flight", fresh, replays, inFlight, callers-1)
		}
		close(s.gate)
		if fresh, _, _ := check(t, out, 1, ids); fresh != 1 || s.runs.Load() != 1 {
			t.Fatalf("the held run: %d fresh answers, %d runs", fresh, s.runs.Load())
		}
		after(t, cs, b, ids)
	})
}
