package adcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

func guard(t *testing.T) *idem.Guard {
	t.Helper()
	store := memstore.New(nil)
	t.Cleanup(func() { store.Close() })
	g, err := idem.NewGuard(store, &idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func answer(t *testing.T, a adcp.Answer) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.Body, &m); err != nil {
		t.Fatalf("answer %s: %v", a.Body, err)
	}
	return m
}

func task(tool string, args string) adcp.Task {
	return adcp.Task{Tool: tool, Principal: "agent-1", Arguments: json.RawMessage(args)}
}

// A read with a key replays; without one it runs each time; a key used on
// another task conflicts.
func TestKeyedRead(t *testing.T) {
	g := guard(t)
	runs := 0
	list := adcp.Read(g, nil, func(context.Context, *adcp.Call) (map[string]any, error) {
		runs++
		return map[string]any{"media_buys": []int{runs}}, nil
	})
	const key = "read-key-0000000000000001"
	first := answer(t, list(context.Background(), task("get_media_buys", `{"idempotency_key":"`+key+`","context":{"n":1}}`)))
	again := answer(t, list(context.Background(), task("get_media_buys", `{"idempotency_key":"`+key+`","context":{"n":2}}`)))
	if first["replayed"] != false || again["replayed"] != true || runs != 1 || again["context"].(map[string]any)["n"] != 2.0 {
		t.Fatalf("keyed read: %v then %v (%d runs)", first, again, runs)
	}
	plain := answer(t, list(context.Background(), task("get_media_buys", `{}`)))
	if _, ok := plain["replayed"]; ok || runs != 2 || plain["status"] != "completed" {
		t.Fatalf("unkeyed read: %v (%d runs), want a run without replayed", plain, runs)
	}
	other := adcp.Read(g, nil, func(context.Context, *adcp.Call) (map[string]any, error) { return map[string]any{}, nil })
	a := other(context.Background(), task("get_products", `{"idempotency_key":"`+key+`"}`))
	if e := answer(t, a)["adcp_error"].(map[string]any); !a.IsError || e["code"] != "IDEMPOTENCY_CONFLICT" {
		t.Fatalf("the read's key on another task: %s", a.Body)
	}
	bad := list(context.Background(), task("get_media_buys", `{"idempotency_key":"short"}`))
	if e := answer(t, bad)["adcp_error"].(map[string]any); !bad.IsError || e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" {
		t.Fatalf("a malformed key on a read: %s", bad.Body)
	}
}

// The version pin decides the answer's shape.
func TestVersions(t *testing.T) {
	g := guard(t)
	create := adcp.Mutating(g, nil, func(_ context.Context, c *adcp.Call) (map[string]any, error) {
		return map[string]any{"media_buy_id": "mb_1", "served": c.Version}, nil
	})
	for i, tc := range []struct {
		pin, want string
		versioned bool // adcp_version served (3.1 and later)
	}{
		{`"adcp_version":"3.2"`, "3.2", true},
		{`"adcp_version":"3.1"`, "3.1", true},
		{`"adcp_version":"3.9-beta.1"`, "3.2", true}, // the newest supported below the pin
		{`"adcp_major_version":3`, "3.0", false},     // a client of 3.0
		{`"budget":1`, "3.2", true},                  // no pin: the latest
	} {
		a := answer(t, create(context.Background(), task("create_media_buy", fmt.Sprintf(`{"idempotency_key":"version-key-%010d",%s}`, i, tc.pin))))
		if a["served"] != tc.want || a["status"] != "completed" || (a["adcp_version"] == tc.want) != tc.versioned {
			t.Errorf("pin %s: %v, want %s", tc.pin, a, tc.want)
		}
	}
	for _, pin := range []string{`"adcp_version":"4.0"`, `"adcp_version":"3"`, `"adcp_major_version":2`, `"adcp_version":7`} {
		a := create(context.Background(), task("create_media_buy", `{"idempotency_key":"key-unsupported-00000001",`+pin+`}`))
		e := answer(t, a)["adcp_error"].(map[string]any)
		if !a.IsError || e["code"] != "VERSION_UNSUPPORTED" || e["details"].(map[string]any)["supported_versions"] == nil {
			t.Errorf("pin %s: %s, want VERSION_UNSUPPORTED with supported_versions", pin, a.Body)
		}
	}
}

// With an account salt, AdCP 3.1+ requests are scoped by account; 3.0
// requests stay scoped by principal.
func TestAccountScoping(t *testing.T) {
	g := guard(t)
	runs := 0
	create := adcp.Mutating(g, &adcp.Options{AccountSalt: []byte("seller-secret-0123456789")}, func(_ context.Context, c *adcp.Call) (map[string]any, error) {
		runs++
		return map[string]any{"run": runs}, nil
	})
	acme := `"account":{"brand":{"domain":"acme.example"},"operator":"a.example"}`
	beta := `"account":{"brand":{"domain":"beta.example"},"operator":"a.example"}`
	call := func(args string) adcp.Answer { return create(context.Background(), task("create_media_buy", args)) }
	call(`{"idempotency_key":"scoped-key-000000000001",` + acme + `}`)
	b := call(`{"idempotency_key":"scoped-key-000000000001",` + beta + `}`)
	if b.IsError || runs != 2 {
		t.Fatalf("the same key under another account (3.2): %s, %d runs; want a fresh run", b.Body, runs)
	}
	call(`{"idempotency_key":"scoped-key-000000000002",` + acme + `,"adcp_major_version":3}`)
	c := call(`{"idempotency_key":"scoped-key-000000000002",` + beta + `,"adcp_major_version":3}`)
	if e, _ := answer(t, c)["adcp_error"].(map[string]any); !c.IsError || e["code"] != "IDEMPOTENCY_CONFLICT" {
		t.Fatalf("the same key under another account (3.0): %s, want IDEMPOTENCY_CONFLICT", c.Body)
	}
}

// A handler sees the request's context (for what it sends later, such as
// a task's webhooks); the stored answer never holds it.
func TestCallContext(t *testing.T) {
	var seen []string
	create := adcp.Mutating(guard(t), nil, func(_ context.Context, c *adcp.Call) (map[string]any, error) {
		seen = append(seen, string(c.Context))
		return map[string]any{"ok": true}, nil
	})
	ro := adcp.ReadOnly(nil, func(_ context.Context, c *adcp.Call) (map[string]any, error) {
		seen = append(seen, string(c.Context))
		return map[string]any{}, nil
	})
	create(context.Background(), task("create_media_buy", `{"idempotency_key":"call-context-000001","context":{"trace":"a"}}`))
	ro(context.Background(), task("comply_test_controller", `{"context":{"trace":"b"}}`))
	ro(context.Background(), task("comply_test_controller", `{}`))
	if len(seen) != 3 || seen[0] != `{"trace":"a"}` || seen[1] != `{"trace":"b"}` || seen[2] != "" {
		t.Fatalf("contexts seen by the handlers: %q", seen)
	}
}
