package sellertest

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// Accounts and proposals (the runner's deterministic_testing,
// pagination_integrity_list_accounts and media_buy_seller/proposal_finalize
// storyboards).

// syncedIDs returns the account ids of a sync_accounts answer, in order,
// failing the test unless each account got the action want.
func syncedIDs(t *testing.T, a Answer, want ...string) []string {
	t.Helper()
	rows, _ := a.Body["accounts"].([]any)
	if a.IsError || len(rows) != len(want) {
		t.Fatalf("sync_accounts: %s, want %d accounts", a.Raw, len(want))
	}
	var ids []string
	for i, r := range rows {
		row := r.(map[string]any)
		if row["action"] != want[i] {
			t.Fatalf("sync_accounts account %d: action %v, want %s: %s", i, row["action"], want[i], a.Raw)
		}
		id, _ := row["account_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

// listedAccounts returns the ids list_accounts walks with args, a page of
// two at a time.
func listedAccounts(t *testing.T, cs Client, args map[string]any) []string {
	t.Helper()
	return walk(t, cs, "list_accounts", args, "accounts", func(a map[string]any) string { return a["account_id"].(string) }, 2)
}

// accounts: sync_accounts provisions accounts before any media buy,
// list_accounts lists them (pages, status and sandbox filters), a media buy
// under an account's natural key uses it, force_account_status blocks it;
// sync_accounts is idempotent (replay, conflict, key required) and a bad
// request changes nothing.
func accounts(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	stamp := time.Now().UnixNano()
	operator := fmt.Sprintf("agency-%d.example", stamp)
	acct := func(brand string, extra map[string]any) map[string]any {
		m := map[string]any{"brand": map[string]any{"domain": fmt.Sprintf("%s-%d.example", brand, stamp)}, "operator": operator, "billing": "operator", "sandbox": true}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	three := []any{acct("acme", nil), acct("nova", map[string]any{"payment_terms": "net_60"}), acct("pinnacle", nil)}
	key := newKey("sync")
	args := map[string]any{"idempotency_key": key, "accounts": three, "context": map[string]any{"correlation_id": "sync-1"}}

	// Bad requests are refused whole and change nothing: the valid first
	// account of each is not provisioned.
	before := listedAccounts(t, cs, map[string]any{})
	for _, bad := range []struct {
		name  string
		args  map[string]any
		field string
	}{
		{"no billing", map[string]any{"accounts": []any{three[0], map[string]any{"brand": map[string]any{"domain": "x.example"}, "operator": operator}}}, "accounts[1].billing"},
		{"bad operator", map[string]any{"accounts": []any{three[0], acct("y", map[string]any{"operator": "Not A Domain"})}}, "accounts[1].operator"},
		{"bad payment terms", map[string]any{"accounts": []any{three[0], acct("z", map[string]any{"payment_terms": "net_7"})}}, "accounts[1].payment_terms"},
		{"duplicate", map[string]any{"accounts": []any{three[0], three[0]}}, "accounts[1]"},
		{"no accounts", map[string]any{"accounts": []any{}}, "accounts"},
		{"delete_missing", map[string]any{"accounts": []any{three[0]}, "delete_missing": true}, "delete_missing"},
	} {
		bad.args["idempotency_key"] = newKey("badsync")
		e := Call(t, cs, "sync_accounts", bad.args).ErrorObject(t)
		if (e["code"] != "INVALID_REQUEST" && e["code"] != "UNSUPPORTED_FEATURE") || e["field"] != bad.field {
			t.Fatalf("sync_accounts, %s: %v, want an error on %s", bad.name, e, bad.field)
		}
	}
	noKey := Call(t, cs, "sync_accounts", map[string]any{"accounts": three})
	if e := noKey.ErrorObject(t); e["code"] != "INVALID_REQUEST" {
		t.Fatalf("sync_accounts without idempotency_key: %v, want INVALID_REQUEST", e)
	}
	if after := listedAccounts(t, cs, map[string]any{}); !slices.Equal(after, before) {
		t.Fatalf("refused syncs changed the accounts: %v, then %v", before, after)
	}

	// A dry run says what would happen and provisions nothing.
	dry := Call(t, cs, "sync_accounts", map[string]any{"idempotency_key": newKey("dry"), "accounts": three, "dry_run": true})
	syncedIDs(t, dry, "created", "created", "created")
	if dry.Body["dry_run"] != true {
		t.Fatalf("a dry run answers dry_run true: %s", dry.Raw)
	}
	if after := listedAccounts(t, cs, map[string]any{}); !slices.Equal(after, before) {
		t.Fatalf("a dry run changed the accounts: %v, then %v", before, after)
	}

	// Three accounts, provisioned once; a retry replays the answer; the
	// key with another payload is a conflict that provisions nothing.
	first := Call(t, cs, "sync_accounts", args)
	ids := syncedIDs(t, first, "created", "created", "created")
	if first.Body["replayed"] != false || correlation(t, first) != "sync-1" {
		t.Fatalf("sync_accounts: %s, want a fresh answer echoing the context", first.Raw)
	}
	for i, r := range first.Body["accounts"].([]any) {
		row := r.(map[string]any)
		if row["status"] != "active" || row["billing"] != "operator" || row["operator"] != operator || ids[i] == "" {
			t.Fatalf("synced account %d: %v", i, row)
		}
	}
	if terms := first.Body["accounts"].([]any)[1].(map[string]any)["payment_terms"]; terms != "net_60" {
		t.Fatalf("payment_terms agreed: %v, want net_60", terms)
	}
	replay := Call(t, cs, "sync_accounts", args)
	if replay.Body["replayed"] != true || !slices.Equal(syncedIDs(t, replay, "created", "created", "created"), ids) {
		t.Fatalf("sync_accounts replay: %s", replay.Raw)
	}
	other := acct("other", nil)
	if e := Call(t, cs, "sync_accounts", map[string]any{"idempotency_key": key, "accounts": []any{other}}).ErrorObject(t); e["code"] != "IDEMPOTENCY_CONFLICT" {
		t.Fatalf("sync_accounts, the key with another payload: %v, want IDEMPOTENCY_CONFLICT", e)
	}
	listed := listedAccounts(t, cs, map[string]any{})
	if want := append(slices.Clone(before), ids...); !slices.Equal(listed, want) {
		t.Fatalf("list_accounts after the sync: %v, want %v (the conflict provisions nothing)", listed, want)
	}

	// A new key: unchanged accounts, an update, a billing model the seller
	// does not offer (failed, the others still synced).
	again := Call(t, cs, "sync_accounts", map[string]any{"idempotency_key": newKey("sync2"), "accounts": []any{
		three[0], acct("nova", map[string]any{"payment_terms": "net_30"}), acct("agentbilled", map[string]any{"billing": "agent"}),
	}})
	syncedIDs(t, again, "unchanged", "updated", "failed")
	failed := again.Body["accounts"].([]any)[2].(map[string]any)
	if errs, _ := failed["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["code"] != "BILLING_NOT_SUPPORTED" || failed["account_id"] != nil {
		t.Fatalf("an account billed to the agent: %v, want failed with BILLING_NOT_SUPPORTED and no account_id", failed)
	}

	// The filters narrow the listing to the synced sandbox accounts.
	sandbox := listedAccounts(t, cs, map[string]any{"sandbox": true})
	for _, id := range ids {
		if !slices.Contains(sandbox, id) {
			t.Fatalf("list_accounts sandbox true: %v lacks %s", sandbox, id)
		}
	}
	if e := Call(t, cs, "list_accounts", map[string]any{"status": "dormant"}).ErrorObject(t); e["code"] != "INVALID_REQUEST" || e["field"] != "status" {
		t.Fatalf("list_accounts with an unknown status: %v", e)
	}

	// A media buy under a synced account's natural key is made under it;
	// a suspended account takes none until it is active again.
	buy := Create32Args(newKey("accbuy"), 10, "", "", "accbuy")
	buy["account"] = map[string]any{"brand": three[0].(map[string]any)["brand"], "operator": operator}
	made := Call(t, cs, "create_media_buy", buy)
	if made.IsError || made.Body["account"].(map[string]any)["account_id"] != ids[0] {
		t.Fatalf("create_media_buy under a synced account: %s, want account %s", made.Raw, ids[0])
	}
	if r := controllerCall(t, cs, "force_account_status", map[string]any{"account_id": ids[0], "status": "suspended"}); r["success"] != true || r["previous_state"] != "active" || r["current_state"] != "suspended" {
		t.Fatalf("force_account_status suspended: %v", r)
	}
	if got := listedAccounts(t, cs, map[string]any{"status": "suspended"}); !slices.Contains(got, ids[0]) || slices.Contains(got, ids[1]) {
		t.Fatalf("list_accounts status suspended: %v, want %s and not %s", got, ids[0], ids[1])
	}
	buy["idempotency_key"] = newKey("accbuy2")
	if e := Call(t, cs, "create_media_buy", buy).ErrorObject(t); e["code"] != "ACCOUNT_SUSPENDED" {
		t.Fatalf("create_media_buy under a suspended account: %v, want ACCOUNT_SUSPENDED", e)
	}
	if r := controllerCall(t, cs, "force_account_status", map[string]any{"account_id": ids[0], "status": "active"}); r["success"] != true || r["previous_state"] != "suspended" {
		t.Fatalf("force_account_status active: %v", r)
	}
	buy["idempotency_key"] = newKey("accbuy3")
	reactivated := Call(t, cs, "create_media_buy", buy)
	if reactivated.IsError {
		t.Fatalf("create_media_buy under the reactivated account: %s", reactivated.Raw)
	}

	// force_media_buy_status moves a buy until a terminal status, which
	// no transition leaves.
	mb := reactivated.Body["media_buy_id"].(string)
	for _, st := range []string{"active", "completed"} {
		if r := controllerCall(t, cs, "force_media_buy_status", map[string]any{"media_buy_id": mb, "status": st}); r["success"] != true || r["current_state"] != st {
			t.Fatalf("force_media_buy_status %s: %v", st, r)
		}
		got := Call(t, cs, "get_media_buys", map[string]any{"media_buy_ids": []any{mb}})
		if list, _ := got.Body["media_buys"].([]any); len(list) != 1 || list[0].(map[string]any)["status"] != st {
			t.Fatalf("get_media_buys after force_media_buy_status %s: %s", st, got.Raw)
		}
	}
	for _, tc := range []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"media_buy_id": mb, "status": "active"}, "INVALID_TRANSITION"},
		{map[string]any{"media_buy_id": "mb_nosuch", "status": "active"}, "NOT_FOUND"},
		{map[string]any{"media_buy_id": mb, "status": "sleeping"}, "INVALID_PARAMS"},
	} {
		if r := controllerCall(t, cs, "force_media_buy_status", tc.params); r["success"] != false || r["error"] != tc.want {
			t.Fatalf("force_media_buy_status %v: %v, want %s", tc.params, r, tc.want)
		}
	}
	for _, p := range []map[string]any{{"account_id": ids[0], "status": "dormant"}, {"account_id": ids[0]}} {
		if r := controllerCall(t, cs, "force_account_status", p); r["error"] != "INVALID_PARAMS" {
			t.Fatalf("force_account_status %v: %v, want INVALID_PARAMS", p, r)
		}
	}
	if r := controllerCall(t, cs, "force_account_status", map[string]any{"account_id": "acc_nosuch", "status": "active"}); r["error"] != "NOT_FOUND" {
		t.Fatalf("force_account_status on no account: %v, want NOT_FOUND", r)
	}

	// Another principal sees none of them.
	for _, id := range listedAccounts(t, Dial(t, env.URL, Token2), map[string]any{}) {
		if slices.Contains(ids, id) {
			t.Fatalf("another principal lists account %s", id)
		}
	}
}

// proposals: get_products in brief mode answers a proposal over the
// products it lists; refine mode finalizes it (committed, with an
// expiry), answers every change request in order, and says "unable" for
// what it cannot do; malformed refine requests are refused.
func proposals(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	brief := Call(t, cs, "get_products", map[string]any{"buying_mode": "brief", "brief": "display across the site, Q2"})
	props, _ := brief.Body["proposals"].([]any)
	if brief.IsError || len(props) != 1 {
		t.Fatalf("get_products brief: %s, want one proposal", brief.Raw)
	}
	plan := props[0].(map[string]any)
	id, _ := plan["proposal_id"].(string)
	var products []string
	for _, p := range brief.Body["products"].([]any) {
		products = append(products, p.(map[string]any)["product_id"].(string))
	}
	total := 0.0
	for _, a := range plan["allocations"].([]any) {
		al := a.(map[string]any)
		if !slices.Contains(products, al["product_id"].(string)) {
			t.Fatalf("allocation %v names a product the answer does not list", al)
		}
		total += al["allocation_percentage"].(float64)
	}
	if id == "" || total != 100 || plan["proposal_status"] != "draft" {
		t.Fatalf("proposal %v: want an id, allocations summing to 100 (got %v), draft", plan, total)
	}
	if w := Call(t, cs, "get_products", map[string]any{"buying_mode": "wholesale"}); w.IsError || w.Body["proposals"] != nil {
		t.Fatalf("get_products wholesale: %s, want products without proposals", w.Raw)
	}

	refined := Call(t, cs, "get_products", map[string]any{"buying_mode": "refine", "refine": []any{
		map[string]any{"scope": "proposal", "proposal_id": id, "action": "finalize"},
		map[string]any{"scope": "request", "ask": "more video"},
		map[string]any{"scope": "proposal", "proposal_id": "balanced_reach_q2", "ask": "shift budget to CTV"},
		map[string]any{"scope": "product", "product_id": products[0], "action": "include"},
	}})
	applied, _ := refined.Body["refinement_applied"].([]any)
	props, _ = refined.Body["proposals"].([]any)
	if refined.IsError || len(applied) != 4 || len(props) != 1 {
		t.Fatalf("get_products refine: %s, want four refinements and the proposal", refined.Raw)
	}
	for i, want := range []string{"applied", "unable", "unable", "applied"} {
		if r := applied[i].(map[string]any); r["status"] != want {
			t.Fatalf("refinement %d: %v, want %s", i, r, want)
		}
	}
	if r := applied[2].(map[string]any); r["scope"] != "proposal" || r["proposal_id"] != "balanced_reach_q2" {
		t.Fatalf("a refinement echoes its scope and id: %v", r)
	}
	final := props[0].(map[string]any)
	expires, err := time.Parse(time.RFC3339, fmt.Sprint(final["expires_at"]))
	if final["proposal_id"] != id || final["proposal_status"] != "committed" || err != nil || !expires.After(time.Now()) {
		t.Fatalf("the finalized proposal: %v, want %s committed with a future expires_at", final, id)
	}
	omit := Call(t, cs, "get_products", map[string]any{"buying_mode": "refine", "refine": []any{map[string]any{"scope": "proposal", "proposal_id": id, "action": "omit"}}})
	if p, _ := omit.Body["proposals"].([]any); omit.IsError || len(p) != 0 {
		t.Fatalf("get_products refine omitting the proposal: %s", omit.Raw)
	}

	for _, bad := range []struct {
		args  map[string]any
		field string
	}{
		{map[string]any{"buying_mode": "refine"}, "refine"},
		{map[string]any{"buying_mode": "refine", "refine": []any{map[string]any{"scope": "campaign", "ask": "x"}}}, "refine[0].scope"},
		{map[string]any{"buying_mode": "refine", "refine": []any{map[string]any{"scope": "proposal"}}}, "refine[0].proposal_id"},
		{map[string]any{"buying_mode": "refine", "refine": []any{map[string]any{"scope": "product", "product_id": "p", "action": "finalize"}}}, "refine[0].action"},
		{map[string]any{"buying_mode": "brief", "brief": "x", "refine": []any{map[string]any{"scope": "request", "ask": "x"}}}, "refine"},
		{map[string]any{"buying_mode": "wholesale", "brief": "x"}, "brief"},
	} {
		if e := Call(t, cs, "get_products", bad.args).ErrorObject(t); e["code"] != "INVALID_REQUEST" || e["field"] != bad.field {
			t.Fatalf("get_products %v: %v, want INVALID_REQUEST on %s", bad.args, e, bad.field)
		}
	}
}
