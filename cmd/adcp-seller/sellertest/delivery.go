package sellertest

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// Delivery reporting (the runner's media_buy_seller/delivery_reporting and
// deterministic_testing's deterministic_delivery): comply_test_controller's
// simulate_delivery injects delivery, get_media_buy_delivery reports it.

// deliveryOf calls get_media_buy_delivery with args and returns its
// media_buy_deliveries, failing the test on an error answer.
func deliveryOf(t *testing.T, cs Client, args map[string]any) (Answer, []map[string]any) {
	t.Helper()
	a := Call(t, cs, "get_media_buy_delivery", args)
	if a.IsError {
		t.Fatalf("get_media_buy_delivery %v: %s", args, a.Raw)
	}
	rows, ok := a.Body["media_buy_deliveries"].([]any)
	if !ok {
		t.Fatalf("get_media_buy_delivery without media_buy_deliveries: %s", a.Raw)
	}
	var out []map[string]any
	for _, r := range rows {
		out = append(out, r.(map[string]any))
	}
	return a, out
}

// totalsOf returns the totals of the one delivery in ds.
func totalsOf(t *testing.T, ds []map[string]any) map[string]any {
	t.Helper()
	if len(ds) != 1 {
		t.Fatalf("want the delivery of one media buy, got %v", ds)
	}
	return ds[0]["totals"].(map[string]any)
}

func near(a any, b float64) bool {
	f, ok := a.(float64)
	return ok && math.Abs(f-b) < 1e-6
}

// fixedPrice is the fixed_price get_products lists for a pricing option.
func fixedPrice(t *testing.T, cs Client, product, option string) float64 {
	t.Helper()
	a := Call(t, cs, "get_products", map[string]any{"buying_mode": "wholesale"})
	for _, p := range a.Body["products"].([]any) {
		pm := p.(map[string]any)
		if pm["product_id"] != product {
			continue
		}
		for _, o := range pm["pricing_options"].([]any) {
			om := o.(map[string]any)
			if f, ok := om["fixed_price"].(float64); ok && om["pricing_option_id"] == option {
				return f
			}
		}
	}
	t.Fatalf("get_products lists no fixed_price for %s/%s: %s", product, option, a.Raw)
	return 0
}

// delivery: simulate_delivery is refused on bad input (which changes
// nothing), on another principal's or an unknown media buy and for a
// principal outside the sandbox; its delivery accumulates, spread over the
// packages by budget; get_media_buy_delivery reports it with totals, per
// package (pricing model, rate) and per day, filtered by media buy, status
// and dates, and to its owner only; the capabilities advertise the
// scenario at 3.0 and 3.2.
func delivery(t *testing.T, env Env) {
	cs := Dial(t, env.URL, Token)
	other := Dial(t, env.URL, Token2)

	for _, args := range []map[string]any{{"adcp_major_version": 3}, {"adcp_version": "3.2"}} {
		caps := Call(t, cs, "get_adcp_capabilities", args)
		ct, _ := caps.Body["compliance_testing"].(map[string]any)
		sc, _ := ct["scenarios"].([]any)
		if !slices.Contains(sc, any("simulate_delivery")) || (args["adcp_major_version"] == 3) == slices.Contains(sc, any("seed_product")) {
			t.Fatalf("capabilities %v: compliance_testing %v, want simulate_delivery (and the seed_ scenarios from 3.1 only)", args, ct)
		}
	}

	bid := 2.5
	args := Create32Args(newKey("delivery"), 0, "", "", "delivery")
	args["packages"] = []any{
		map[string]any{"product_id": "test-product", "pricing_option_id": "default", "budget": 3000.0},
		map[string]any{"product_id": "test-product", "pricing_option_id": "test-pricing", "budget": 1000.0, "bid_price": bid},
	}
	created := Call(t, cs, "create_media_buy", args)
	id, _ := created.Body["media_buy_id"].(string)
	if created.IsError || id == "" {
		t.Fatalf("create_media_buy: %s", created.Raw)
	}
	var pkgIDs []string
	for _, p := range created.Body["packages"].([]any) {
		pkgIDs = append(pkgIDs, p.(map[string]any)["package_id"].(string))
	}
	one := map[string]any{"media_buy_ids": []any{id}}

	// Nothing delivered yet: zeros, and every package listed.
	_, ds := deliveryOf(t, cs, one)
	if tot := totalsOf(t, ds); !near(tot["impressions"], 0) || !near(tot["spend"], 0) || len(ds[0]["by_package"].([]any)) != 2 {
		t.Fatalf("delivery before any simulation: %v", ds)
	}

	// Bad input is refused and adds nothing.
	spend := func(amount any, currency string) map[string]any {
		return map[string]any{"amount": amount, "currency": currency}
	}
	for _, bad := range []struct {
		name   string
		cs     Client
		params map[string]any
		code   string
	}{
		{"no media_buy_id", cs, map[string]any{"impressions": 10}, "INVALID_PARAMS"},
		{"nothing to simulate", cs, map[string]any{"media_buy_id": id}, "INVALID_PARAMS"},
		{"negative impressions", cs, map[string]any{"media_buy_id": id, "impressions": -1}, "INVALID_PARAMS"},
		{"fractional clicks", cs, map[string]any{"media_buy_id": id, "impressions": 10, "clicks": 1.5}, "INVALID_PARAMS"},
		{"impressions not a number", cs, map[string]any{"media_buy_id": id, "impressions": "many"}, "INVALID_PARAMS"},
		{"negative conversions", cs, map[string]any{"media_buy_id": id, "conversions": -2}, "INVALID_PARAMS"},
		{"spend without amount", cs, map[string]any{"media_buy_id": id, "impressions": 10, "reported_spend": map[string]any{"currency": "USD"}}, "INVALID_PARAMS"},
		{"negative spend", cs, map[string]any{"media_buy_id": id, "reported_spend": spend(-1, "USD")}, "INVALID_PARAMS"},
		{"another currency", cs, map[string]any{"media_buy_id": id, "impressions": 10, "reported_spend": spend(5, "EUR")}, "INVALID_PARAMS"},
		{"unknown media buy", cs, map[string]any{"media_buy_id": "no-such-buy-" + newKey("x"), "impressions": 10}, "NOT_FOUND"},
		{"outside the sandbox", other, map[string]any{"media_buy_id": id, "impressions": 10}, "FORBIDDEN"},
	} {
		if r := controllerCall(t, bad.cs, "simulate_delivery", bad.params); r["success"] != false || r["error"] != bad.code {
			t.Fatalf("simulate_delivery, %s: %v, want %s", bad.name, r, bad.code)
		}
	}
	_, ds = deliveryOf(t, cs, one)
	if tot := totalsOf(t, ds); !near(tot["impressions"], 0) || !near(tot["clicks"], 0) || !near(tot["spend"], 0) {
		t.Fatalf("refused simulations added delivery: %v", tot)
	}

	// Two simulations accumulate.
	first := controllerCall(t, cs, "simulate_delivery", map[string]any{"media_buy_id": id, "impressions": 5000, "clicks": 150, "reported_spend": spend(250.0, "USD")})
	if first["success"] != true || !near(first["simulated"].(map[string]any)["impressions"], 5000) || !near(first["cumulative"].(map[string]any)["impressions"], 5000) {
		t.Fatalf("simulate_delivery: %v", first)
	}
	second := controllerCall(t, cs, "simulate_delivery", map[string]any{"media_buy_id": id, "impressions": 1001, "clicks": 11, "conversions": 3, "reported_spend": spend(50.5, "USD")})
	cum := second["cumulative"].(map[string]any)
	if second["success"] != true || !near(cum["impressions"], 6001) || !near(cum["clicks"], 161) || !near(cum["conversions"], 3) ||
		!near(cum["reported_spend"].(map[string]any)["amount"], 300.5) || cum["reported_spend"].(map[string]any)["currency"] != "USD" {
		t.Fatalf("the second simulate_delivery's running totals: %v", second)
	}

	// Reported: totals, per package by budget (3:1), per day.
	a, ds := deliveryOf(t, cs, map[string]any{"media_buy_ids": []any{id}, "include_package_daily_breakdown": true, "context": map[string]any{"correlation_id": "delivery"}})
	tot := totalsOf(t, ds)
	if !near(tot["impressions"], 6001) || !near(tot["clicks"], 161) || !near(tot["spend"], 300.5) || !near(tot["conversions"], 3) || !near(tot["ctr"], 161.0/6001) {
		t.Fatalf("totals: %v", tot)
	}
	if a.Body["currency"] != "USD" || correlation(t, a) != "delivery" || ds[0]["media_buy_id"] != id || ds[0]["status"] != created.Body["media_buy_status"] {
		t.Fatalf("get_media_buy_delivery: %s", a.Raw)
	}
	agg, _ := a.Body["aggregated_totals"].(map[string]any)
	if !near(agg["media_buy_count"], 1) || !near(agg["impressions"], 6001) || !near(agg["spend"], 300.5) {
		t.Fatalf("aggregated_totals: %v", agg)
	}
	rp := a.Body["reporting_period"].(map[string]any)
	start, err1 := time.Parse(time.RFC3339, fmt.Sprint(rp["start"]))
	end, err2 := time.Parse(time.RFC3339, fmt.Sprint(rp["end"]))
	if err1 != nil || err2 != nil || end.Before(start) {
		t.Fatalf("reporting_period: %v", rp)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	pkgs := ds[0]["by_package"].([]any)
	wantImps, wantSpend := []float64{4501, 1500}, []float64{300.5 * 0.75, 300.5 * 0.25}
	wantRate := []float64{fixedPrice(t, cs, "test-product", "default"), bid}
	var impSum, spendSum float64
	for i, p := range pkgs {
		pm := p.(map[string]any)
		daily, _ := pm["daily_breakdown"].([]any)
		if pm["package_id"] != pkgIDs[i] || !near(pm["impressions"], wantImps[i]) || !near(pm["spend"], wantSpend[i]) || pm["pricing_model"] != "cpm" ||
			!near(pm["rate"], wantRate[i]) || pm["currency"] != "USD" || len(daily) != 1 || daily[0].(map[string]any)["date"] != today ||
			!near(daily[0].(map[string]any)["impressions"], wantImps[i]) {
			t.Fatalf("by_package[%d]: %v", i, pm)
		}
		impSum += pm["impressions"].(float64)
		spendSum += pm["spend"].(float64)
	}
	if !near(impSum, 6001) || !near(spendSum, 300.5) {
		t.Fatalf("the packages add up to %v impressions and %v spend, the totals are 6001 and 300.5", impSum, spendSum)
	}
	if _, ds := deliveryOf(t, cs, one); ds[0]["by_package"].([]any)[0].(map[string]any)["daily_breakdown"] != nil {
		t.Fatalf("daily_breakdown without include_package_daily_breakdown: %v", ds)
	}

	// Filters: status, dates, an unknown id; refused filters.
	status := created.Body["media_buy_status"].(string)
	otherStatus := "canceled"
	if status == otherStatus {
		otherStatus = "active"
	}
	if _, ds := deliveryOf(t, cs, map[string]any{"media_buy_ids": []any{id}, "status_filter": otherStatus}); len(ds) != 0 {
		t.Fatalf("status_filter %s: %v", otherStatus, ds)
	}
	if _, ds := deliveryOf(t, cs, map[string]any{"media_buy_ids": []any{id}, "status_filter": []any{otherStatus, status}}); len(ds) != 1 {
		t.Fatalf("status_filter [%s %s]: %v", otherStatus, status, ds)
	}
	yesterday := time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	if _, ds := deliveryOf(t, cs, map[string]any{"media_buy_ids": []any{id}, "start_date": yesterday, "end_date": yesterday}); !near(totalsOf(t, ds)["impressions"], 0) {
		t.Fatalf("delivery of yesterday, before any: %v", ds)
	}
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	if _, ds := deliveryOf(t, cs, map[string]any{"media_buy_ids": []any{id}, "start_date": tomorrow}); !near(totalsOf(t, ds)["impressions"], 0) {
		t.Fatalf("delivery from tomorrow on: %v", ds)
	}
	a, ds = deliveryOf(t, cs, map[string]any{"media_buy_ids": []any{id}, "start_date": yesterday, "end_date": today})
	if !near(totalsOf(t, ds)["impressions"], 6001) || a.Body["reporting_period"].(map[string]any)["start"] != yesterday+"T00:00:00Z" ||
		a.Body["reporting_period"].(map[string]any)["end"] != today+"T23:59:59Z" {
		t.Fatalf("delivery from yesterday to today: %s", a.Raw)
	}
	missing := "no-such-buy-" + newKey("y")
	a, ds = deliveryOf(t, cs, map[string]any{"media_buy_ids": []any{id, missing}})
	errs, _ := a.Body["errors"].([]any)
	if len(ds) != 1 || len(errs) != 1 || errs[0].(map[string]any)["code"] != "MEDIA_BUY_NOT_FOUND" || errs[0].(map[string]any)["field"] != "media_buy_ids[1]" {
		t.Fatalf("an unknown id beside a known one: %s", a.Raw)
	}
	for _, bad := range []struct {
		args        map[string]any
		code, field string
	}{
		{map[string]any{"status_filter": "running"}, "INVALID_REQUEST", "status_filter"},
		{map[string]any{"status_filter": []any{}}, "INVALID_REQUEST", "status_filter"},
		{map[string]any{"start_date": "2026-02-30"}, "INVALID_REQUEST", "start_date"},
		{map[string]any{"start_date": today, "end_date": yesterday}, "INVALID_REQUEST", "end_date"},
		{map[string]any{"time_granularity": "hourly"}, "UNSUPPORTED_GRANULARITY", "time_granularity"},
	} {
		if e := Call(t, cs, "get_media_buy_delivery", bad.args).ErrorObject(t); e["code"] != bad.code || e["field"] != bad.field {
			t.Fatalf("get_media_buy_delivery %v: %v, want %s on %s", bad.args, e, bad.code, bad.field)
		}
	}

	// Another principal sees none of it.
	a, ds = deliveryOf(t, other, one)
	if len(ds) != 0 || a.Body["errors"] == nil {
		t.Fatalf("%s reads %s's delivery: %s", OtherPrincipal, Principal, a.Raw)
	}
}
