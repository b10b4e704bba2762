package sellertest

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// The behaviours the runner's full assessment (make assessment,
// docs/COMPLIANCE.md "The runner's full assessment") checks beyond the
// storyboards make compliance runs.

// assessment: the bearer layer's 401 carries an RFC 6750 challenge
// (security_baseline); a seeded product whose format ids name only the
// format gets the standard formats' agent (media_buy_seller's fixtures);
// force_create_media_buy_arm echoes the directive it registered
// (create_media_buy_async); force_creative_status validates its params and
// finds no creative in this seller's empty library (deterministic_testing);
// a paused buy resumes to active, the lifecycle's only edge back
// (media_buy_state_machine); a package's targeting_overlay is kept, returned
// and replaced by an update (inventory_list_targeting); measurement terms
// within the seller's tolerance are accepted and kept, stricter ones
// refused with TERMS_REJECTED (measurement_terms_rejected).
func assessment(t *testing.T, env Env) {
	for _, tc := range []struct {
		name, token, want string
	}{
		{"no token", "", `Bearer realm="adcp"`},
		{"unknown token", "invalid-0123456789abcdef", `Bearer realm="adcp", error="invalid_token"`},
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, env.URL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || got != tc.want {
			t.Errorf("%s: %d with WWW-Authenticate %q, want 401 with %q", tc.name, resp.StatusCode, got, tc.want)
		}
	}

	cs := Dial(t, env.URL, Token)
	product := "video-" + newKey("p")[:24]
	if r := controllerCall(t, cs, "seed_product", map[string]any{"product_id": product, "fixture": map[string]any{
		"delivery_type": "guaranteed", "channels": []any{"video"}, "format_ids": []any{map[string]any{"id": "video_30s"}},
	}}); r["success"] != true {
		t.Fatalf("seed_product: %v", r)
	}
	products := Call(t, cs, "get_products", map[string]any{"buying_mode": "wholesale", "filters": map[string]any{"channels": []any{"video"}}})
	ps, _ := products.Body["products"].([]any)
	i := slices.IndexFunc(ps, func(p any) bool { return p.(map[string]any)["product_id"] == product })
	if i < 0 {
		t.Fatalf("get_products does not list the seeded product: %s", products.Raw)
	}
	ids, _ := ps[i].(map[string]any)["format_ids"].([]any)
	if len(ids) != 1 || ids[0].(map[string]any)["agent_url"] != "https://creative.adcontextprotocol.org" || ids[0].(map[string]any)["id"] != "video_30s" {
		t.Fatalf("the seeded product's format_ids: %v", ids)
	}

	task := "echoed_" + newKey("t")[:20]
	r := controllerCall(t, cs, "force_create_media_buy_arm", map[string]any{"arm": "submitted", "task_id": task})
	if f, _ := r["forced"].(map[string]any); r["success"] != true || f["arm"] != "submitted" || f["task_id"] != task {
		t.Fatalf("force_create_media_buy_arm does not echo its directive: %v", r)
	}
	// Spend the arm, so that no later create of this principal is forced.
	if sub := Call(t, cs, "create_media_buy", Create32Args(newKey("echoed"), 10, "", "", "echoed")); sub.Body["task_id"] != task {
		t.Fatalf("the forced create: %s", sub.Raw)
	}

	if r := controllerCall(t, cs, "force_creative_status", map[string]any{}); r["success"] != false || r["error"] != "INVALID_PARAMS" {
		t.Fatalf("force_creative_status without params: %v", r)
	}
	if r := controllerCall(t, cs, "force_creative_status", map[string]any{"creative_id": "no-such-creative", "status": "approved"}); r["success"] != false || r["error"] != "NOT_FOUND" {
		t.Fatalf("force_creative_status of an unknown creative: %v", r)
	}

	created := Call(t, cs, "create_media_buy", Create32Args(newKey("to-pause"), 100, "", "", "p"))
	id, _ := created.Body["media_buy_id"].(string)
	for _, step := range []struct {
		paused bool
		want   string
	}{{true, "paused"}, {false, "active"}} {
		a := Call(t, cs, "update_media_buy", map[string]any{"adcp_version": "3.2", "idempotency_key": newKey("pause"), "media_buy_id": id, "paused": step.paused})
		if a.IsError || a.Body["media_buy_status"] != step.want {
			t.Fatalf("update_media_buy paused=%v: %s, want media_buy_status %s", step.paused, a.Raw, step.want)
		}
	}

	overlay := func(list string) map[string]any {
		return map[string]any{"property_list": map[string]any{"agent_url": "https://governance.example", "list_id": list}}
	}
	terms := func(window string, variance float64) map[string]any {
		return map[string]any{"billing_measurement": map[string]any{"vendor": map[string]any{"domain": "measure.example"},
			"measurement_window": window, "max_variance_percent": variance}}
	}
	args := Create32Args(newKey("targeted"), 100, "", "", "t")
	args["packages"] = []any{map[string]any{"product_id": "test-product", "pricing_option_id": "test-pricing", "budget": 100,
		"targeting_overlay": overlay("allow_v1"), "measurement_terms": terms("c7", 10)}}
	targeted := Call(t, cs, "create_media_buy", args)
	if targeted.IsError {
		t.Fatalf("a create with a targeting overlay and acceptable measurement terms: %s", targeted.Raw)
	}
	buyID, _ := targeted.Body["media_buy_id"].(string)
	pkgID, _ := targeted.Body["packages"].([]any)[0].(map[string]any)["package_id"].(string)
	listOf := func() (string, any) {
		got := Call(t, cs, "get_media_buys", map[string]any{"media_buy_ids": []any{buyID}})
		p := got.Body["media_buys"].([]any)[0].(map[string]any)["packages"].([]any)[0].(map[string]any)
		list, _ := p["targeting_overlay"].(map[string]any)["property_list"].(map[string]any)["list_id"].(string)
		return list, p["measurement_terms"]
	}
	if list, kept := listOf(); list != "allow_v1" || kept == nil {
		t.Fatalf("get_media_buys after the create: list %q, measurement_terms %v", list, kept)
	}
	if a := Call(t, cs, "update_media_buy", map[string]any{"adcp_version": "3.2", "idempotency_key": newKey("swap"), "media_buy_id": buyID,
		"packages": []any{map[string]any{"package_id": pkgID, "targeting_overlay": overlay("allow_v2")}}}); a.IsError {
		t.Fatalf("update_media_buy swapping the overlay: %s", a.Raw)
	}
	if list, _ := listOf(); list != "allow_v2" {
		t.Fatalf("get_media_buys after the update: list %q, want allow_v2", list)
	}
	for name, bad := range map[string]map[string]any{"no variance": terms("c7", 0), "a 30-day window": terms("c30", 10)} {
		args := Create32Args(newKey("strict"), 100, "", "", "s")
		args["packages"] = []any{map[string]any{"product_id": "test-product", "pricing_option_id": "test-pricing", "budget": 100, "measurement_terms": bad}}
		if e := Call(t, cs, "create_media_buy", args).ErrorObject(t); e["code"] != "TERMS_REJECTED" || e["field"] != "packages[0].measurement_terms" {
			t.Fatalf("measurement terms with %s: %v", name, e)
		}
	}
}
