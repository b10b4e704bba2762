package sellertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
)

// The AdCP 3.2 scenarios: what the 3.2 storyboards check, and what the
// 6.11 runner cannot check (docs/COMPLIANCE.md lists which scenario
// stands in for which runner limitation). The seller under test must
// treat Principal as a sandbox principal and OtherPrincipal as not.

// Create32Args is a create_media_buy request of an AdCP 3.2 buyer: pinned
// to 3.2, for the acmeoutdoor.example account through
// pinnacle-agency.example, starting asap. With pushURL set it registers a
// webhook under operationID.
func Create32Args(key string, budget float64, pushURL, operationID, correlation string) map[string]any {
	args := map[string]any{
		"adcp_version": "3.2",
		"account":      map[string]any{"brand": map[string]any{"domain": "acmeoutdoor.example"}, "operator": "pinnacle-agency.example"},
		"brand":        map[string]any{"domain": "acmeoutdoor.example"},
		"start_time":   "asap",
		"end_time":     "2099-07-31T23:59:59Z",
		"packages":     []any{map[string]any{"product_id": "test-product", "budget": budget, "pricing_option_id": "test-pricing"}},
		"context":      map[string]any{"correlation_id": correlation},
	}
	if key != "" {
		args["idempotency_key"] = key
	}
	if pushURL != "" {
		args["push_notification_config"] = map[string]any{"url": pushURL, "operation_id": operationID}
	}
	return args
}

// Run32 runs the AdCP 3.2 scenarios against env.
func Run32(t *testing.T, env Env) {
	t.Run("Envelope", func(t *testing.T) { envelope32(t, env) })
	t.Run("Async", func(t *testing.T) { async32(t, env) })
	t.Run("WebhookSignatures", func(t *testing.T) { signatures(t, env) })
	t.Run("Controller", func(t *testing.T) { controller(t, env) })
	t.Run("Validation", func(t *testing.T) { validation(t, env) })
	t.Run("Update", func(t *testing.T) { update(t, env) })
	t.Run("ReadReplay", func(t *testing.T) { readReplay(t, env) })
	t.Run("AccountScope", func(t *testing.T) { accountScope(t, env) })
	t.Run("ToolSchemas", func(t *testing.T) { toolSchemas(t, env) })
	t.Run("Assessment", func(t *testing.T) { assessment(t, env) })
	t.Run("Pagination", func(t *testing.T) { paginationScenario(t, env) })
	t.Run("SeedMediaBuy", func(t *testing.T) { seedMediaBuys(t, env) })
	t.Run("SeedCreative", func(t *testing.T) { seedCreatives(t, env) })
	t.Run("Accounts", func(t *testing.T) { accounts(t, env) })
	t.Run("Proposals", func(t *testing.T) { proposals(t, env) })
	t.Run("Delivery", func(t *testing.T) { delivery(t, env) })
}

func correlation(t *testing.T, a Answer) any {
	t.Helper()
	c, _ := a.Body["context"].(map[string]any)
	return c["correlation_id"]
}

// envelope32: every answer carries the envelope's status and never the
// legacy fields; 3.2 answers serve adcp_version; a 3.2 create puts the
// media buy's status in media_buy_status.
func envelope32(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	for _, args := range []map[string]any{{}, {"adcp_version": "3.2"}, {"adcp_major_version": 3}} {
		args["context"] = map[string]any{"correlation_id": "env"}
		a := Call(t, cs, "get_adcp_capabilities", args)
		if a.IsError || a.Body["status"] != "completed" || a.Body["task_status"] != nil || a.Body["response_status"] != nil || correlation(t, a) != "env" {
			t.Fatalf("capabilities %v: %s", args, a.Raw)
		}
		if _, pinned30 := args["adcp_major_version"]; pinned30 == (a.Body["adcp_version"] != nil) {
			t.Fatalf("capabilities %v: adcp_version served wrongly: %s", args, a.Raw)
		}
	}
	a := Call(t, cs, "create_media_buy", Create32Args(newKey("env32"), 100, "", "", "c"))
	if a.IsError || a.Body["status"] != "completed" || a.Body["media_buy_status"] != "pending_creatives" || a.Body["adcp_version"] != "3.2" || a.Body["revision"] != 1.0 {
		t.Fatalf("3.2 create: %s", a.Raw)
	}
	old := Call(t, cs, "create_media_buy", CreateArgs(newKey("env30"), 100, "", "c"))
	if old.IsError || old.Body["status"] != "pending_creatives" || old.Body["media_buy_status"] != nil || old.Body["adcp_version"] != nil {
		t.Fatalf("3.0 create: %s", old.Raw)
	}
	bad := Call(t, cs, "create_media_buy", Create32Args("", 100, "", "", "c"))
	if !bad.IsError || bad.Body["status"] != "failed" || bad.ErrorObject(t)["code"] != "INVALID_REQUEST" {
		t.Fatalf("3.2 error: %s", bad.Raw)
	}
}

// async32: a 3.2 create that registers a webhook answers submitted; the
// replay returns that submitted answer even after the task completed
// (rule 2); the task completes once, its webhook echoes operation_id and
// the originating context; get_task_status answers it; the three ids are
// separate. get_products refuses a webhook registration and sends
// nothing.
func async32(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	before := env.Count(Principal)
	key := newKey("async")
	path := "/hooks/" + key
	first := Call(t, cs, "create_media_buy", Create32Args(key, 700, env.Receiver.URL(path), "op_"+key[:20], "async-1"))
	task, _ := first.Body["task_id"].(string)
	if first.IsError || first.Body["status"] != "submitted" || task == "" || first.Body["media_buy_id"] != nil || first.Body["replayed"] != false {
		t.Fatalf("submitted create: %s", first.Raw)
	}
	if task == key || strings.Contains(task, key) {
		t.Fatalf("the task id %q is derived from the idempotency key", task)
	}
	events := env.Receiver.WaitFor(t, path, 1)
	ev := events[0]
	result, _ := ev["result"].(map[string]any)
	if ev["operation_id"] != "op_"+key[:20] || ev["task_id"] != task || ev["status"] != "completed" || ev["task_type"] != "create_media_buy" || result["media_buy_id"] == nil {
		t.Fatalf("completion webhook: %v", ev)
	}
	if ctx, _ := ev["context"].(map[string]any); ctx["correlation_id"] != "async-1" {
		t.Fatalf("the webhook does not echo the originating context: %v", ev)
	}
	if k, _ := ev["idempotency_key"].(string); !eventKey.MatchString(k) || k == key || k == task {
		t.Fatalf("webhook idempotency_key %q: want its own key", k)
	}
	replay := Call(t, cs, "create_media_buy", Create32Args(key, 700, env.Receiver.URL(path), "op_"+key[:20], "async-2"))
	if replay.Body["status"] != "submitted" || replay.Body["task_id"] != task || replay.Body["replayed"] != true || correlation(t, replay) != "async-2" {
		t.Fatalf("replay after completion: %s, want the submitted answer replayed", replay.Raw)
	}
	st := Call(t, cs, "get_task_status", map[string]any{"task_id": task, "include_result": true})
	if st.IsError || st.Body["status"] != "completed" || st.Body["has_webhook"] != true || st.Body["result"].(map[string]any)["media_buy_id"] != result["media_buy_id"] {
		t.Fatalf("get_task_status: %s", st.Raw)
	}
	if got := env.Count(Principal) - before; got != 1 {
		t.Fatalf("%d media buys from one submitted create and its replay, want 1", got)
	}
	buys := Call(t, cs, "get_media_buys", map[string]any{"media_buy_ids": []any{result["media_buy_id"]}})
	if list, _ := buys.Body["media_buys"].([]any); len(list) != 1 {
		t.Fatalf("get_media_buys of the task's media buy: %s", buys.Raw)
	}
	// Not the caller's task: answered as if it did not exist.
	other := Call(t, Dial(t, env.URL, Token2), "get_task_status", map[string]any{"task_id": task})
	if other.ErrorObject(t)["code"] != "REFERENCE_NOT_FOUND" {
		t.Fatalf("another principal's get_task_status: %s", other.Raw)
	}
	for _, bad := range []string{"", "has space", strings.Repeat("x", 256)} {
		a := Call(t, cs, "get_task_status", map[string]any{"task_id": bad})
		if e := a.ErrorObject(t); e["code"] != "INVALID_REQUEST" || e["field"] != "task_id" {
			t.Fatalf("malformed task id %q: %s", bad, a.Raw)
		}
	}
	// A synchronous read with a webhook registration: refused, and no
	// webhook ever goes there.
	quiet := "/hooks/quiet-" + key
	gp := Call(t, cs, "get_products", map[string]any{"buying_mode": "wholesale", "adcp_version": "3.2",
		"push_notification_config": map[string]any{"url": env.Receiver.URL(quiet), "operation_id": "op_quiet"}})
	if e := gp.ErrorObject(t); e["code"] != "INVALID_REQUEST" || e["field"] != "push_notification_config" || gp.Body["task_id"] != nil {
		t.Fatalf("get_products with a webhook: %s", gp.Raw)
	}
	// A later webhook proves the seller has sent what it was going to.
	marker := "/hooks/marker-" + key
	Call(t, cs, "create_media_buy", Create32Args(newKey("marker"), 1, env.Receiver.URL(marker), "op_marker", "m"))
	env.Receiver.WaitFor(t, marker, 1)
	if n := len(env.Receiver.Deliveries(path)); n != 1 {
		t.Fatalf("%d webhooks for one task, want 1", n)
	}
	if n := len(env.Receiver.Deliveries(quiet)); n != 0 {
		t.Fatalf("%d webhooks for a synchronous read", n)
	}
}

// signatures: the seller's JWKS is published at the well-known path with
// a request-signing key, and every webhook delivered verifies against it
// under the AdCP webhook profile.
func signatures(t *testing.T, env Env) {
	base := baseURL(env.URL)
	resp, err := http.Get(base + httpsig.WellKnownJWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("JWKS: HTTP %d", resp.StatusCode)
	}
	jwks, err := httpsig.ParseJWKS(raw)
	if err != nil {
		t.Fatalf("JWKS: %v: %s", err, raw)
	}
	if len(jwks.Keys) == 0 || jwks.Keys[0].AdCPUse != httpsig.AdCPUseRequestSigning {
		t.Fatalf("JWKS without a request-signing key: %s", raw)
	}
	key := newKey("signed")
	path := "/hooks/" + key
	cs := Dial(t, env.URL, Token)
	Call(t, cs, "create_media_buy", Create32Args(key, 10, env.Receiver.URL(path), "op_signed", "s"))
	env.Receiver.WaitFor(t, path, 1)
	v := httpsig.NewVerifier(httpsig.ProfileWebhook, jwks)
	for _, r := range env.Receiver.Requests(path) {
		body, _ := io.ReadAll(r.Body)
		got, err := v.Verify(context.Background(), r, body)
		if err != nil {
			t.Fatalf("a delivered webhook does not verify against the published JWKS: %v (Signature-Input %q)", err, r.Header.Get("Signature-Input"))
		}
		if got.KeyID != jwks.Keys[0].Kid {
			t.Fatalf("signed with %q, published %q", got.KeyID, jwks.Keys[0].Kid)
		}
	}
}

func controllerCall(t *testing.T, cs Client, scenario string, params map[string]any) map[string]any {
	t.Helper()
	a := Call(t, cs, "comply_test_controller", map[string]any{"scenario": scenario, "params": params})
	if a.IsError {
		t.Fatalf("comply_test_controller %s: %s", scenario, a.Raw)
	}
	return a.Body
}

// controller: seeding makes products buyable; only sandbox principals
// may use the controller; bad input is refused and changes nothing; a
// forced arm makes the next create submitted with the chosen task id, and
// force_task_completion completes it once.
func controller(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	list := controllerCall(t, cs, "list_scenarios", nil)
	if sc, _ := list["scenarios"].([]any); list["success"] != true || !slices.Contains(sc, any("seed_product")) {
		t.Fatalf("list_scenarios: %v", list)
	}
	if r := controllerCall(t, Dial(t, env.URL, Token2), "list_scenarios", nil); r["success"] != false || r["error"] != "FORBIDDEN" {
		t.Fatalf("a non-sandbox principal got the controller: %v", r)
	}
	product := "seeded-" + newKey("p")[:24]
	if r := controllerCall(t, cs, "seed_product", map[string]any{"product_id": product, "fixture": map[string]any{"name": "Seeded", "delivery_type": "guaranteed"}}); r["success"] != true {
		t.Fatalf("seed_product: %v", r)
	}
	if r := controllerCall(t, cs, "seed_product", map[string]any{"product_id": product, "fixture": map[string]any{"name": "Seeded", "delivery_type": "guaranteed"}}); r["success"] != true {
		t.Fatalf("an equivalent re-seed: %v", r)
	}
	if r := controllerCall(t, cs, "seed_product", map[string]any{"product_id": product, "fixture": map[string]any{"name": "Other"}}); r["error"] != "INVALID_PARAMS" {
		t.Fatalf("a divergent re-seed: %v", r)
	}
	if r := controllerCall(t, cs, "seed_pricing_option", map[string]any{"product_id": product, "pricing_option_id": "po1",
		"fixture": map[string]any{"pricing_model": "cpm", "currency": "EUR", "fixed_price": 9.5}}); r["success"] != true {
		t.Fatalf("seed_pricing_option: %v", r)
	}
	for scenario, params := range map[string]map[string]any{
		"seed_product":               {},
		"seed_pricing_option":        {"product_id": product},
		"force_task_completion":      {"task_id": "t1"},
		"force_create_media_buy_arm": {"arm": "submitted"},
	} {
		if r := controllerCall(t, cs, scenario, params); r["error"] != "INVALID_PARAMS" {
			t.Fatalf("%s without its params: %v", scenario, r)
		}
	}
	if r := controllerCall(t, cs, "simulate_budget_spend", map[string]any{"media_buy_id": "a", "spend_percentage": 95}); r["error"] != "UNKNOWN_SCENARIO" {
		t.Fatalf("an unimplemented scenario: %v", r)
	}
	if r := controllerCall(t, cs, "force_task_completion", map[string]any{"task_id": "no-such-task", "result": map[string]any{"x": 1}}); r["error"] != "NOT_FOUND" {
		t.Fatalf("completing an unknown task: %v", r)
	}

	args := Create32Args(newKey("seeded"), 50, "", "", "seeded")
	args["packages"] = []any{map[string]any{"product_id": product, "pricing_option_id": "po1", "budget": 50}}
	seeded := Call(t, cs, "create_media_buy", args)
	if seeded.IsError || seeded.Body["currency"] != "EUR" {
		t.Fatalf("a create on the seeded product: %s", seeded.Raw)
	}
	products := Call(t, cs, "get_products", map[string]any{"buying_mode": "wholesale", "filters": map[string]any{"delivery_type": "guaranteed"}})
	if ps, _ := products.Body["products"].([]any); len(ps) == 0 || !slices.ContainsFunc(ps, func(p any) bool { return p.(map[string]any)["product_id"] == product }) {
		t.Fatalf("get_products does not list the seeded product: %s", products.Raw)
	}

	task := "forced_" + newKey("t")[:20]
	if r := controllerCall(t, cs, "force_create_media_buy_arm", map[string]any{"arm": "submitted", "task_id": task}); r["success"] != true {
		t.Fatalf("force_create_media_buy_arm: %v", r)
	}
	before := env.Count(Principal)
	sub := Call(t, cs, "create_media_buy", Create32Args(newKey("forced"), 10, "", "", "forced"))
	if sub.Body["status"] != "submitted" || sub.Body["task_id"] != task {
		t.Fatalf("the forced create: %s", sub.Raw)
	}
	if next := Call(t, cs, "create_media_buy", Create32Args(newKey("after-forced"), 10, "", "", "n")); next.Body["status"] != "completed" {
		t.Fatalf("the create after the forced one: %s (the arm applies once)", next.Raw)
	}
	done := controllerCall(t, cs, "force_task_completion", map[string]any{"task_id": task, "result": map[string]any{"media_buy_id": "mb_forced_" + task[len("forced_"):], "packages": []any{}}})
	if done["success"] != true || done["current_state"] != "completed" {
		t.Fatalf("force_task_completion: %v", done)
	}
	again := controllerCall(t, cs, "force_task_completion", map[string]any{"task_id": task, "result": map[string]any{"x": 1}})
	if again["error"] != "INVALID_TRANSITION" {
		t.Fatalf("completing a completed task: %v", again)
	}
	st := Call(t, cs, "get_task_status", map[string]any{"task_id": task, "include_result": true})
	if st.Body["status"] != "completed" || st.Body["result"].(map[string]any)["media_buy_id"] != "mb_forced_"+task[len("forced_"):] {
		t.Fatalf("the forced task: %s", st.Raw)
	}
	if got := env.Count(Principal) - before; got != 2 {
		t.Fatalf("%d media buys (forced task + the create after), want 2", got)
	}
}

// validation: bad input gets a clear AdCP error, stores nothing, and
// leaves the key free for the corrected request.
func validation(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	before := env.Count(Principal)
	key := newKey("invalid")
	for name, tc := range map[string]struct {
		pkg         map[string]any
		code, field string
	}{
		"negative budget":      {map[string]any{"product_id": "test-product", "pricing_option_id": "test-pricing", "budget": -5}, "INVALID_REQUEST", "packages[0].budget"},
		"unresolved product":   {map[string]any{"product_id": "$context.product_id", "pricing_option_id": "test-pricing", "budget": 5}, "PRODUCT_NOT_FOUND", "packages[0].product_id"},
		"unknown pricing":      {map[string]any{"product_id": "test-product", "pricing_option_id": "nope", "budget": 5}, "INVALID_PRICING_OPTION", "packages[0].pricing_option_id"},
		"measurement terms":    {map[string]any{"product_id": "test-product", "pricing_option_id": "test-pricing", "budget": 5, "measurement_terms": map[string]any{"viewability": map[string]any{"min": 0.99}}}, "TERMS_REJECTED", "packages[0].measurement_terms"},
		"bid below the floor":  {map[string]any{"product_id": "test-product", "pricing_option_id": "test-pricing", "budget": 5, "bid_price": 0.5}, "INVALID_REQUEST", "packages[0].bid_price"},
		"budget not a number":  {map[string]any{"product_id": "test-product", "pricing_option_id": "test-pricing", "budget": "5"}, "INVALID_REQUEST", ""},
		"missing pricing opt.": {map[string]any{"product_id": "test-product", "budget": 5}, "INVALID_REQUEST", "packages[0].pricing_option_id"},
	} {
		args := Create32Args(key, 5, "", "", name)
		args["packages"] = []any{tc.pkg}
		a := Call(t, cs, "create_media_buy", args)
		e := a.ErrorObject(t)
		if e["code"] != tc.code || (tc.field != "" && e["field"] != tc.field) || e["message"] == "" || correlation(t, a) != name {
			t.Fatalf("%s: %s, want %s on %s", name, a.Raw, tc.code, tc.field)
		}
	}
	for name, mutate := range map[string]func(map[string]any){
		"no account":       func(a map[string]any) { delete(a, "account") },
		"end before start": func(a map[string]any) { a["start_time"] = "2099-08-01T00:00:00Z" },
		"start not a date": func(a map[string]any) { a["start_time"] = "tomorrow" },
		"no packages":      func(a map[string]any) { a["packages"] = []any{} },
		"http webhook url": func(a map[string]any) {
			a["push_notification_config"] = map[string]any{"url": "http://buyer.example/hook", "operation_id": "op"}
		},
		"no operation_id": func(a map[string]any) {
			a["push_notification_config"] = map[string]any{"url": "https://buyer.example/hook"}
		},
		"unknown account":   func(a map[string]any) { a["account"] = map[string]any{"account_id": "acc_does_not_exist"} },
		"proposal":          func(a map[string]any) { a["proposal_id"] = "p1" },
		"unsupported major": func(a map[string]any) { a["adcp_version"] = "4.0" },
	} {
		args := Create32Args(key, 5, "", "", name)
		mutate(args)
		a := Call(t, cs, "create_media_buy", args)
		if !a.IsError || a.ErrorObject(t)["message"] == "" {
			t.Fatalf("%s: %s, want an error", name, a.Raw)
		}
	}
	if got := env.Count(Principal) - before; got != 0 {
		t.Fatalf("refused requests made %d media buys", got)
	}
	if ok := Call(t, cs, "create_media_buy", Create32Args(key, 5, "", "", "fixed")); ok.IsError || ok.Body["replayed"] != false {
		t.Fatalf("the corrected request under the same key: %s, want a fresh success", ok.Raw)
	}
}

// update: update_media_buy is idempotent like create (a replay answers the
// same revision and applies nothing twice), refuses a stale revision, and
// cannot reach another principal's buy.
func update(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	created := Call(t, cs, "create_media_buy", Create32Args(newKey("to-update"), 100, "", "", "u"))
	id, _ := created.Body["media_buy_id"].(string)
	pkgID := created.Body["packages"].([]any)[0].(map[string]any)["package_id"]
	key := newKey("update")
	args := map[string]any{"adcp_version": "3.2", "idempotency_key": key, "media_buy_id": id, "revision": 1,
		"packages": []any{map[string]any{"package_id": pkgID, "budget": 250}}}
	first := Call(t, cs, "update_media_buy", args)
	if first.IsError || first.Body["revision"] != 2.0 || first.Body["media_buy_status"] != "pending_creatives" {
		t.Fatalf("update: %s", first.Raw)
	}
	replay := Call(t, cs, "update_media_buy", args)
	if replay.Body["replayed"] != true || replay.Body["revision"] != 2.0 {
		t.Fatalf("update replay: %s", replay.Raw)
	}
	stale := Call(t, cs, "update_media_buy", map[string]any{"idempotency_key": newKey("stale"), "media_buy_id": id, "revision": 1, "paused": true})
	if stale.ErrorObject(t)["code"] != "CONFLICT" {
		t.Fatalf("a stale revision: %s", stale.Raw)
	}
	got := Call(t, cs, "get_media_buys", map[string]any{"media_buy_ids": []any{id}})
	b := got.Body["media_buys"].([]any)[0].(map[string]any)
	if b["revision"] != 2.0 || b["total_budget"] != 250.0 {
		t.Fatalf("after one update and its replay: %v, want revision 2 and budget 250", b)
	}
	other := Call(t, Dial(t, env.URL, Token2), "update_media_buy", map[string]any{"idempotency_key": newKey("other"), "media_buy_id": id, "paused": true})
	if other.ErrorObject(t)["code"] != "MEDIA_BUY_NOT_FOUND" {
		t.Fatalf("another principal's update: %s", other.Raw)
	}
	missing := Call(t, cs, "update_media_buy", map[string]any{"media_buy_id": id, "paused": true})
	if e := missing.ErrorObject(t); e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" {
		t.Fatalf("update without a key: %s", missing.Raw)
	}
}

// readReplay: a read that carries an idempotency_key is answered once and
// replayed; without a key it simply runs.
func readReplay(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	for _, tool := range []string{"get_products", "list_creative_formats", "list_accounts", "list_creatives", "get_media_buys", "get_media_buy_delivery", "get_adcp_capabilities"} {
		key := newKey("read-" + tool)
		a := Call(t, cs, tool, map[string]any{"idempotency_key": key, "adcp_version": "3.2"})
		b := Call(t, cs, tool, map[string]any{"idempotency_key": key, "adcp_version": "3.2"})
		if a.IsError || a.Body["replayed"] != false || b.Body["replayed"] != true {
			t.Fatalf("%s with a key: %s then %s", tool, a.Raw, b.Raw)
		}
		plain := Call(t, cs, tool, map[string]any{})
		if plain.IsError || plain.Body["replayed"] != nil {
			t.Fatalf("%s without a key: %s", tool, plain.Raw)
		}
	}
	formats := Call(t, cs, "list_creative_formats", nil)
	if fs, _ := formats.Body["formats"].([]any); len(fs) == 0 {
		t.Fatalf("list_creative_formats: %s", formats.Raw)
	}
	accts := Call(t, cs, "list_accounts", nil)
	if as, _ := accts.Body["accounts"].([]any); len(as) == 0 || as[0].(map[string]any)["account_id"] == nil {
		t.Fatalf("list_accounts after media buys: %s", accts.Raw)
	}
}

// accountScope: AdCP 3.2 scopes keys by (principal, account), so one key
// under two accounts makes two media buys; a 3.0 request is scoped by
// principal, so the same reuse is IDEMPOTENCY_CONFLICT (as the 3.0.6
// storyboard expects).
func accountScope(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	key := newKey("scope")
	a := Call(t, cs, "create_media_buy", Create32Args(key, 10, "", "", "a"))
	other := Create32Args(key, 20, "", "", "b")
	other["account"] = map[string]any{"brand": map[string]any{"domain": "test.example"}, "operator": "test.example", "sandbox": true}
	b := Call(t, cs, "create_media_buy", other)
	if a.IsError || b.IsError || a.Body["media_buy_id"] == b.Body["media_buy_id"] || b.Body["replayed"] != false {
		t.Fatalf("3.2: one key, two accounts: %s / %s; want two media buys", a.Raw, b.Raw)
	}
	key30 := newKey("scope30")
	Call(t, cs, "create_media_buy", CreateArgs(key30, 10, "", "a30"))
	other30 := CreateArgs(key30, 20, "", "b30")
	other30["account"] = map[string]any{"brand": map[string]any{"domain": "test.example"}, "operator": "test.example", "sandbox": true}
	if c := Call(t, cs, "create_media_buy", other30); c.ErrorObject(t)["code"] != "IDEMPOTENCY_CONFLICT" {
		t.Fatalf("3.0: one key, two accounts: %s, want IDEMPOTENCY_CONFLICT", c.Raw)
	}
}

// toolSchemas: tools/list publishes real input schemas; over A2A, the
// agent card lists the same tools as skills.
func toolSchemas(t *testing.T, env Env) {
	if IsA2A(env.URL) {
		cardSkills(t, env)
		return
	}
	cs := Connect(t, env.URL, Token)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
		raw, _ := json.Marshal(tool.InputSchema)
		var s struct {
			Type       string                     `json:"type"`
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		}
		if err := json.Unmarshal(raw, &s); err != nil || s.Type != "object" || len(s.Properties) < 3 || tool.Description == "" {
			t.Fatalf("%s: input schema %s", tool.Name, raw)
		}
		if tool.Name == "create_media_buy" {
			for _, p := range []string{"idempotency_key", "account", "packages", "push_notification_config", "start_time"} {
				if s.Properties[p] == nil {
					t.Fatalf("create_media_buy's schema has no %s: %s", p, raw)
				}
			}
			if !slices.Contains(s.Required, "packages") || slices.Contains(s.Required, "idempotency_key") {
				t.Fatalf("create_media_buy's required: %v (idempotency_key is checked by the tool, so that a missing key is INVALID_REQUEST)", s.Required)
			}
		}
	}
	for _, want := range []string{"get_adcp_capabilities", "get_products", "list_creative_formats", "list_accounts", "list_creatives",
		"create_media_buy", "update_media_buy", "get_media_buys", "get_media_buy_delivery", "get_task_status", "comply_test_controller"} {
		if !slices.Contains(names, want) {
			t.Fatalf("tools/list lacks %s: %v", want, names)
		}
	}
}

// RateLimitNotReplayed is the 3.2 idempotency storyboard's
// rate_limit_replay_invariant phase, which the 6.11 runner cannot drive
// (url is an MCP or an A2A endpoint, see Dial):
// against a seller whose write budget is one new key per second (burst
// 1), a burst of fresh keys trips RATE_LIMITED with retry_after; after
// that wait, the rate-limited key gets the real answer, never the cached
// RATE_LIMITED.
func RateLimitNotReplayed(t *testing.T, url string) {
	cs := Dial(t, url, Token)
	var limitedKey string
	var retryAfter float64
	for i := range 20 {
		key := newKey(fmt.Sprint("burst-", i))
		a := Call(t, cs, "create_media_buy", Create32Args(key, 5, "", "", "trip"))
		if a.IsError && a.ErrorObject(t)["code"] == "RATE_LIMITED" {
			limitedKey = key
			retryAfter, _ = a.Body["adcp_error"].(map[string]any)["retry_after"].(float64)
			break
		}
	}
	if limitedKey == "" || retryAfter < 1 || retryAfter > 3600 {
		t.Fatalf("20 fresh keys against a 1/s budget: no RATE_LIMITED with a retry_after of 1 to 3600 s (key %q, retry_after %v)", limitedKey, retryAfter)
	}
	time.Sleep(time.Duration(retryAfter * float64(time.Second)))
	a := Call(t, cs, "create_media_buy", Create32Args(limitedKey, 5, "", "", "after-wait"))
	if a.IsError || a.Body["replayed"] != false || a.Body["media_buy_id"] == nil {
		t.Fatalf("the rate-limited key after retry_after: %s, want the real answer, not a cached RATE_LIMITED", a.Raw)
	}
}
