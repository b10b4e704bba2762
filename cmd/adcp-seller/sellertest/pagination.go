package sellertest

import (
	"fmt"
	"slices"
	"testing"
)

// Cursor pagination (the runner's pagination_integrity_* storyboards):
// a list answer carries pagination {has_more, cursor, total_count}, a
// cursor exactly when has_more is true; following the cursors visits
// every item once.

// controllerFor calls comply_test_controller for account.
func controllerFor(t *testing.T, cs Client, acct map[string]any, scenario string, params map[string]any) map[string]any {
	t.Helper()
	a := Call(t, cs, "comply_test_controller", map[string]any{"account": acct, "scenario": scenario, "params": params})
	if a.IsError {
		t.Fatalf("comply_test_controller %s: %s", scenario, a.Raw)
	}
	return a.Body
}

// walk lists tool's items (the answer's member named items, identified by
// id) a page of size at a time, checking every page's pagination block,
// and returns the ids in the order listed.
func walk(t *testing.T, cs Client, tool string, args map[string]any, items string, id func(map[string]any) string, size int) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("%s: the cursors never end", tool)
		}
		req := map[string]any{}
		for k, v := range args {
			req[k] = v
		}
		p := map[string]any{"max_results": size}
		if cursor != "" {
			p["cursor"] = cursor
		}
		req["pagination"] = p
		a := Call(t, cs, tool, req)
		if a.IsError {
			t.Fatalf("%s page %d: %s", tool, pages, a.Raw)
		}
		pg, _ := a.Body["pagination"].(map[string]any)
		list, _ := a.Body[items].([]any)
		more, ok := pg["has_more"].(bool)
		c, hasCursor := pg["cursor"].(string)
		switch {
		case pg == nil || !ok:
			t.Fatalf("%s: no pagination.has_more: %s", tool, a.Raw)
		case more != hasCursor || (more && c == ""):
			t.Fatalf("%s: has_more %v with cursor %q: %s", tool, more, c, a.Raw)
		case len(list) > size || (more && len(list) != size):
			t.Fatalf("%s: %d items on a page of %d (has_more %v)", tool, len(list), size, more)
		}
		for _, it := range list {
			ids = append(ids, id(it.(map[string]any)))
		}
		if total, ok := pg["total_count"].(float64); !ok || !more && int(total) != len(ids) {
			t.Fatalf("%s: total_count %v after %d items listed: %s", tool, pg["total_count"], len(ids), a.Raw)
		}
		if !more {
			return ids
		}
		cursor = c
	}
}

func paginationScenario(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)

	// Formats seeded for an account are what list_creative_formats lists
	// for it, a page at a time; without an account, the catalog's.
	acct := map[string]any{"account_id": "acct_" + newKey("fmt")[:24]}
	var seeded []string
	for i := range 3 {
		id := fmt.Sprintf("pg_format_%d", i)
		seeded = append(seeded, id)
		if r := controllerFor(t, cs, acct, "seed_creative_format", map[string]any{"format_id": id, "fixture": map[string]any{"name": "Format " + id, "type": "display"}}); r["success"] != true {
			t.Fatalf("seed_creative_format: %v", r)
		}
	}
	formatID := func(f map[string]any) string { return f["format_id"].(map[string]any)["id"].(string) }
	if got := walk(t, cs, "list_creative_formats", map[string]any{"account": acct}, "formats", formatID, 2); !slices.Equal(got, seeded) {
		t.Fatalf("list_creative_formats for the account lists %v, want the seeded %v", got, seeded)
	}
	if got := walk(t, cs, "list_creative_formats", map[string]any{}, "formats", formatID, 1); !slices.Contains(got, "display_300x250") || slices.Contains(got, seeded[0]) {
		t.Fatalf("list_creative_formats without an account lists %v, want the catalog's formats", got)
	}
	for _, p := range []map[string]any{{"cursor": "not-a-cursor"}, {"max_results": 101}, {"max_results": -1}} {
		if e := Call(t, cs, "list_creative_formats", map[string]any{"pagination": p}).ErrorObject(t); e["code"] != "INVALID_REQUEST" {
			t.Fatalf("list_creative_formats with pagination %v: %v, want INVALID_REQUEST", p, e)
		}
	}

	// get_media_buys pages through the account's buys, oldest first; a
	// cursor of another listing is refused.
	brand := newKey("pg")[:20] + ".example"
	var created []string
	for i := range 3 {
		args := Create32Args(newKey(fmt.Sprintf("pgbuy%d", i)), 10, "", "", "pg")
		args["account"] = map[string]any{"brand": map[string]any{"domain": brand}, "operator": brand}
		args["brand"] = map[string]any{"domain": brand}
		a := Call(t, cs, "create_media_buy", args)
		if a.IsError {
			t.Fatalf("create_media_buy: %s", a.Raw)
		}
		created = append(created, a.Body["media_buy_id"].(string))
	}
	buyID := func(b map[string]any) string { return b["media_buy_id"].(string) }
	buyAcct := map[string]any{"brand": map[string]any{"domain": brand}, "operator": brand}
	if got := walk(t, cs, "get_media_buys", map[string]any{"account": buyAcct}, "media_buys", buyID, 2); !slices.Equal(got, created) {
		t.Fatalf("get_media_buys lists %v, want %v", got, created)
	}
	first := Call(t, cs, "get_media_buys", map[string]any{"account": buyAcct, "pagination": map[string]any{"max_results": 1}})
	cursor, _ := first.Body["pagination"].(map[string]any)["cursor"].(string)
	if e := Call(t, cs, "list_accounts", map[string]any{"pagination": map[string]any{"cursor": cursor}}).ErrorObject(t); e["code"] != "INVALID_REQUEST" || e["field"] != "pagination.cursor" {
		t.Fatalf("list_accounts with a get_media_buys cursor: %v, want INVALID_REQUEST on pagination.cursor", e)
	}

	// list_accounts pages through every account once.
	accts := walk(t, cs, "list_accounts", map[string]any{}, "accounts", func(a map[string]any) string { return a["account_id"].(string) }, 1)
	slices.Sort(accts)
	if len(accts) == 0 || len(slices.Compact(slices.Clone(accts))) != len(accts) {
		t.Fatalf("list_accounts walked %v: want each account once", accts)
	}
}

// seedMediaBuys: comply_test_controller's seed_media_buy makes media buys
// get_media_buys lists under the request's account, a page at a time
// (get_media_buys_pagination_integrity); a replay re-seeds, a bad status
// is refused, and a principal outside the sandbox is FORBIDDEN.
func seedMediaBuys(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	brand := newKey("seedmb")[:22] + ".example"
	acct := map[string]any{"brand": map[string]any{"domain": brand}, "operator": brand, "sandbox": true}
	// The ids start with "seeded_": a seeded buy has no idempotent answer,
	// and integration.TestPostgresSeller tells them apart by this prefix.
	prefix := "seeded_" + newKey("s")[:20]
	var ids []string
	for i := range 3 {
		id := fmt.Sprintf("%s_%d", prefix, i)
		ids = append(ids, id)
		if r := controllerFor(t, cs, acct, "seed_media_buy", map[string]any{"media_buy_id": id, "fixture": map[string]any{"status": "active", "currency": "USD"}}); r["success"] != true {
			t.Fatalf("seed_media_buy: %v", r)
		}
	}
	if r := controllerFor(t, cs, acct, "seed_media_buy", map[string]any{"media_buy_id": ids[0], "fixture": map[string]any{"status": "active", "currency": "USD"}}); r["success"] != true {
		t.Fatalf("seed_media_buy replayed: %v", r)
	}
	buyID := func(b map[string]any) string { return b["media_buy_id"].(string) }
	ref := map[string]any{"brand": map[string]any{"domain": brand}, "operator": brand}
	if got := walk(t, cs, "get_media_buys", map[string]any{"account": ref}, "media_buys", buyID, 2); !slices.Equal(got, ids) {
		t.Fatalf("get_media_buys lists %v, want the seeded %v", got, ids)
	}
	one := Call(t, cs, "get_media_buys", map[string]any{"media_buy_ids": []any{ids[2]}})
	bs, _ := one.Body["media_buys"].([]any)
	if pg, _ := one.Body["pagination"].(map[string]any); len(bs) != 1 || bs[0].(map[string]any)["status"] != "active" || bs[0].(map[string]any)["currency"] != "USD" || pg["has_more"] != false {
		t.Fatalf("get_media_buys of a seeded buy: %s", one.Raw)
	}
	if r := controllerFor(t, cs, acct, "seed_media_buy", map[string]any{"media_buy_id": prefix + "_bad", "fixture": map[string]any{"status": "flying"}}); r["success"] != false || r["error"] != "INVALID_PARAMS" {
		t.Fatalf("seed_media_buy with an unknown status: %v", r)
	}
	if r := controllerFor(t, cs, acct, "seed_media_buy", map[string]any{}); r["success"] != false || r["error"] != "INVALID_PARAMS" {
		t.Fatalf("seed_media_buy without media_buy_id: %v", r)
	}
	other := Dial(t, env.URL, Token2)
	if r := controllerFor(t, other, acct, "seed_media_buy", map[string]any{"media_buy_id": prefix + "_other"}); r["success"] != false || r["error"] != "FORBIDDEN" {
		t.Fatalf("seed_media_buy by a principal outside the sandbox: %v", r)
	}
	if n := len(Call(t, other, "get_media_buys", map[string]any{"media_buy_ids": []any{ids[0]}}).Body["media_buys"].([]any)); n != 0 {
		t.Fatalf("another principal sees a seeded buy")
	}
}

// seedCreatives: comply_test_controller's seed_creative fills the
// caller's creative library, which list_creatives lists a page at a time
// with its query_summary (pagination_integrity); force_creative_status
// changes a seeded creative's status; a principal outside the sandbox is
// FORBIDDEN and sees none of them.
func seedCreatives(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	prefix := "cr_" + newKey("s")[:20]
	var ids []string
	for i := range 3 {
		id := fmt.Sprintf("%s_%d", prefix, i)
		ids = append(ids, id)
		if r := controllerCall(t, cs, "seed_creative", map[string]any{"creative_id": id, "fixture": map[string]any{"status": "approved", "format_id": map[string]any{"id": "display_static"}}}); r["success"] != true {
			t.Fatalf("seed_creative: %v", r)
		}
	}
	if r := controllerCall(t, cs, "seed_creative", map[string]any{"creative_id": ids[0], "fixture": map[string]any{"status": "approved", "format_id": map[string]any{"id": "display_static"}}}); r["success"] != true {
		t.Fatalf("seed_creative replayed: %v", r)
	}
	crID := func(c map[string]any) string { return c["creative_id"].(string) }
	got := walk(t, cs, "list_creatives", map[string]any{}, "creatives", crID, 2)
	if len(got) < 3 || !slices.Equal(got[len(got)-3:], ids) {
		t.Fatalf("list_creatives lists %v, want the seeded %v last, once each", got, ids)
	}
	first := Call(t, cs, "list_creatives", map[string]any{"pagination": map[string]any{"max_results": 2}})
	if q, _ := first.Body["query_summary"].(map[string]any); q["total_matching"] != float64(len(got)) || q["returned"] != float64(2) {
		t.Fatalf("list_creatives query_summary: %s", first.Raw)
	}
	if r := controllerCall(t, cs, "force_creative_status", map[string]any{"creative_id": ids[1], "status": "rejected"}); r["success"] != true || r["previous_state"] != "approved" || r["current_state"] != "rejected" {
		t.Fatalf("force_creative_status on a seeded creative: %v", r)
	}
	if r := controllerCall(t, cs, "force_creative_status", map[string]any{"creative_id": ids[1], "status": "flying"}); r["success"] != false || r["error"] != "INVALID_PARAMS" {
		t.Fatalf("force_creative_status to an unknown status: %v", r)
	}
	all := Call(t, cs, "list_creatives", map[string]any{"pagination": map[string]any{"max_results": 100}})
	for _, c := range all.Body["creatives"].([]any) {
		m := c.(map[string]any)
		if m["creative_id"] == ids[1] && m["status"] != "rejected" || m["creative_id"] == ids[0] && m["status"] != "approved" {
			t.Fatalf("a creative's status after force_creative_status: %v", m)
		}
		if f, _ := m["format_id"].(map[string]any); m["creative_id"] == ids[0] && (f["id"] != "display_static" || f["agent_url"] != "https://creative.adcontextprotocol.org") {
			t.Fatalf("a seeded creative's format_id: %v", f)
		}
	}
	if r := controllerCall(t, cs, "seed_creative", map[string]any{"creative_id": prefix + "_bad", "fixture": map[string]any{"status": "flying"}}); r["success"] != false || r["error"] != "INVALID_PARAMS" {
		t.Fatalf("seed_creative with an unknown status: %v", r)
	}
	other := Dial(t, env.URL, Token2)
	if r := controllerCall(t, other, "seed_creative", map[string]any{"creative_id": prefix + "_other"}); r["success"] != false || r["error"] != "FORBIDDEN" {
		t.Fatalf("seed_creative by a principal outside the sandbox: %v", r)
	}
	if n := len(Call(t, other, "list_creatives", map[string]any{}).Body["creatives"].([]any)); n != 0 {
		t.Fatalf("another principal lists %d creatives, want none", n)
	}
}
