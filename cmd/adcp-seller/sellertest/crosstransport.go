package sellertest

import (
	"fmt"
	"sync"
	"testing"
)

// CrossTransport checks that the seller's MCP and A2A endpoints are one
// key space per principal (env.URL is either endpoint; both are used): a
// key first used over MCP replays over A2A with the A2A request's context,
// and the other way round; another payload under the key conflicts on
// either transport; a concurrent burst on one key, half over each
// transport, makes exactly one media buy and answers it to every caller;
// another principal reusing the key gets a media buy of its own and never
// sees the first principal's.
func CrossTransport(t *testing.T, env Env) {
	mcpURL, a2aURL := baseURL(env.URL)+"/mcp", baseURL(env.URL)+"/a2a"
	overMCP, overA2A := Dial(t, mcpURL, Token), Dial(t, a2aURL, Token)
	pair := [2]Client{overMCP, overA2A}
	names := [2]string{"MCP", "A2A"}

	for first := range 2 {
		second := 1 - first
		t.Run(names[first]+" then "+names[second], func(t *testing.T) {
			before := env.Count(Principal)
			key := newKey("cross-" + names[first])
			a := Call(t, pair[first], "create_media_buy", Create32Args(key, 500, "", "", "first"))
			b := Call(t, pair[second], "create_media_buy", Create32Args(key, 500, "", "", "second"))
			if a.IsError || a.Body["replayed"] != false || a.Body["media_buy_id"] == nil {
				t.Fatalf("first call over %s: %s", names[first], a.Raw)
			}
			if b.IsError || b.Body["replayed"] != true || b.Body["media_buy_id"] != a.Body["media_buy_id"] || correlation(t, b) != "second" {
				t.Fatalf("the retry over %s: %s, want %v replayed with its own context", names[second], b.Raw, a.Body["media_buy_id"])
			}
			for _, k := range []string{"status", "media_buy_status", "packages", "revision", "confirmed_at", "total_budget"} {
				if fmt.Sprint(a.Body[k]) != fmt.Sprint(b.Body[k]) {
					t.Fatalf("the replay over %s differs in %s: %v vs %v", names[second], k, b.Body[k], a.Body[k])
				}
			}
			// Another payload under the key: a conflict over either transport.
			for i, c := range pair {
				e := Call(t, c, "create_media_buy", Create32Args(key, 501, "", "", "changed")).ErrorObject(t)
				if e["code"] != "IDEMPOTENCY_CONFLICT" {
					t.Fatalf("another payload over %s: %v, want IDEMPOTENCY_CONFLICT", names[i], e)
				}
			}
			if got := env.Count(Principal) - before; got != 1 {
				t.Fatalf("%d media buys from one key over two transports, want 1", got)
			}
		})
	}

	t.Run("concurrent mix", func(t *testing.T) {
		const n = 16
		before := env.Count(Principal)
		key := newKey("cross-burst")
		clients := make([]Client, n)
		for i := range clients {
			clients[i] = Dial(t, []string{mcpURL, a2aURL}[i%2], Token)
		}
		answers := make([]Answer, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				a, err := TryCall(clients[i], "create_media_buy", Create32Args(key, 500, "", "", fmt.Sprint("burst-", i)))
				if err != nil {
					t.Errorf("caller %d (%s): %v", i, names[i%2], err)
				}
				answers[i] = a
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		fresh := 0
		for i, a := range answers {
			if a.IsError || a.Body["media_buy_id"] != answers[0].Body["media_buy_id"] || correlation(t, a) != fmt.Sprint("burst-", i) {
				t.Fatalf("caller %d (%s): %s, want media buy %v with its own context", i, names[i%2], a.Raw, answers[0].Body["media_buy_id"])
			}
			if a.Body["replayed"] == false {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%d fresh answers among %d callers of one key, want 1", fresh, n)
		}
		if got := env.Count(Principal) - before; got != 1 {
			t.Fatalf("%d media buys from a concurrent burst on one key over both transports, want 1", got)
		}

		// The other principal: the same key is its own, over either
		// transport, and the first principal's media buy stays invisible.
		otherBefore := env.Count(OtherPrincipal)
		id := answers[0].Body["media_buy_id"]
		o1 := Call(t, Dial(t, a2aURL, Token2), "create_media_buy", Create32Args(key, 500, "", "", "other"))
		o2 := Call(t, Dial(t, mcpURL, Token2), "create_media_buy", Create32Args(key, 500, "", "", "other-mcp"))
		if o1.IsError || o1.Body["replayed"] != false || o1.Body["media_buy_id"] == id || o2.Body["replayed"] != true || o2.Body["media_buy_id"] != o1.Body["media_buy_id"] {
			t.Fatalf("%s with %s's key: over A2A %s, then over MCP %s; want a media buy of its own, replayed across transports", OtherPrincipal, Principal, o1.Raw, o2.Raw)
		}
		for i, url := range []string{mcpURL, a2aURL} {
			list := Call(t, Dial(t, url, Token2), "get_media_buys", map[string]any{"media_buy_ids": []any{id}})
			if buys, _ := list.Body["media_buys"].([]any); list.IsError || len(buys) != 0 {
				t.Fatalf("%s sees %s's media buy over %s: %s", OtherPrincipal, Principal, names[i], list.Raw)
			}
		}
		if got := env.Count(OtherPrincipal) - otherBefore; got != 1 {
			t.Fatalf("%s: %d media buys, want 1", OtherPrincipal, got)
		}
		if got := env.Count(Principal) - before; got != 1 {
			t.Fatalf("%s: %d media buys after the other principal's calls, want still 1", Principal, got)
		}
	})
}
