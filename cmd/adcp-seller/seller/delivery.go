package seller

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/adcp-go/idempotency/adcp"
)

// Delivery: comply_test_controller's simulate_delivery and
// get_media_buy_delivery.
//
// This seller serves no ads, so what a media buy delivered is what
// simulate_delivery (sandbox principals only) injected: added to the
// buy's running totals, spread over its packages in proportion to their
// budgets, on the UTC day of the call. get_media_buy_delivery reports it
// for the campaign's lifetime or the days from start_date to end_date:
// per media buy, per package and, when asked, per package and day.

// maxSimulatedCount bounds simulate_delivery's impressions and clicks per
// call, far above any test's, so that running totals cannot overflow.
const maxSimulatedCount = 1e12

// simulateParams are simulate_delivery's params besides media_buy_id
// (comply-test-controller-request.json).
type simulateParams struct {
	Impressions   *float64        `json:"impressions"`
	Clicks        *float64        `json:"clicks"`
	Conversions   *float64        `json:"conversions"`
	ReportedSpend json.RawMessage `json:"reported_spend"`
}

// amount is an amount of money ({amount, currency}).
type amount struct {
	Amount   float64 `json:"amount"`
	Currency string  `json:"currency"`
}

// simulated is what one simulate_delivery call injected, or the running
// totals after it (the controller's simulated and cumulative).
type simulated struct {
	Impressions   int64   `json:"impressions"`
	Clicks        int64   `json:"clicks"`
	Conversions   float64 `json:"conversions"`
	ReportedSpend amount  `json:"reported_spend"`
}

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// simulateDelivery is the controller's simulate_delivery scenario on
// principal's media buy id.
func (s *Seller) simulateDelivery(ctx context.Context, principal, id string, p simulateParams) (controllerResult, error) {
	if id == "" {
		return refused("INVALID_PARAMS", "simulate_delivery requires params.media_buy_id"), nil
	}
	if p.Impressions == nil && p.Clicks == nil && p.Conversions == nil && present(p.ReportedSpend) == nil {
		return refused("INVALID_PARAMS", "simulate_delivery requires at least one of params.impressions, clicks, conversions and reported_spend"), nil
	}
	count := func(name string, v *float64) (int64, string) {
		switch {
		case v == nil:
			return 0, ""
		case *v < 0 || *v != math.Trunc(*v) || *v > maxSimulatedCount:
			return 0, fmt.Sprintf("params.%s must be a whole number from 0 to %g", name, float64(maxSimulatedCount))
		}
		return int64(*v), ""
	}
	var in simulated
	var bad string
	if in.Impressions, bad = count("impressions", p.Impressions); bad != "" {
		return refused("INVALID_PARAMS", bad), nil
	}
	if in.Clicks, bad = count("clicks", p.Clicks); bad != "" {
		return refused("INVALID_PARAMS", bad), nil
	}
	if p.Conversions != nil {
		if *p.Conversions < 0 {
			return refused("INVALID_PARAMS", "params.conversions must be 0 or more"), nil
		}
		in.Conversions = *p.Conversions
	}
	buys, err := s.store.buys(ctx, principal, []string{id})
	if err != nil {
		return controllerResult{}, err
	}
	if len(buys) == 0 {
		return refused("NOT_FOUND", "no media buy with this media_buy_id for the caller"), nil
	}
	b := buys[0]
	in.ReportedSpend.Currency = b.Currency
	if raw := present(p.ReportedSpend); raw != nil {
		var spend struct {
			Amount   *float64 `json:"amount"`
			Currency string   `json:"currency"`
		}
		switch {
		case json.Unmarshal(raw, &spend) != nil || spend.Amount == nil || *spend.Amount < 0 || !currencyCode.MatchString(spend.Currency):
			return refused("INVALID_PARAMS", "params.reported_spend must be {amount: 0 or more, currency: an ISO 4217 code}"), nil
		case spend.Currency != b.Currency:
			return refused("INVALID_PARAMS", "params.reported_spend.currency must be the media buy's currency, "+b.Currency), nil
		}
		in.ReportedSpend.Amount = *spend.Amount
	}
	day := time.Now().UTC().Format(time.DateOnly)
	if err := s.store.addDelivery(ctx, principal, spread(b, day, in)); err != nil {
		return controllerResult{}, err
	}
	rows, err := s.store.deliveries(ctx, principal, []string{id})
	if err != nil {
		return controllerResult{}, err
	}
	sum := simulated{ReportedSpend: amount{Currency: b.Currency}}
	for _, r := range rows {
		sum.Impressions += r.Impressions
		sum.Clicks += r.Clicks
		sum.Conversions += r.Conversions
		sum.ReportedSpend.Amount += r.Spend
	}
	return controllerResult{Success: true, Simulated: &in, Cumulative: &sum,
		Message: "delivery added to the media buy; get_media_buy_delivery reports it"}, nil
}

// spread splits d over b's packages in proportion to their budgets (whole
// impressions and clicks by largest remainder, so that the parts add up
// to the whole), as rows of day. A media buy without packages, or whose
// packages have no budget, gets one row of package "".
func spread(b mediaBuy, day string, d simulated) []deliveryRow {
	var total float64
	for _, p := range b.Packages {
		total += max(p.Budget, 0)
	}
	if total <= 0 {
		return []deliveryRow{{BuyID: b.ID, Day: day, Impressions: d.Impressions, Clicks: d.Clicks, Conversions: d.Conversions, Spend: d.ReportedSpend.Amount}}
	}
	shares := make([]float64, len(b.Packages))
	for i, p := range b.Packages {
		shares[i] = max(p.Budget, 0) / total
	}
	imps, clicks := apportion(d.Impressions, shares), apportion(d.Clicks, shares)
	rows := make([]deliveryRow, len(b.Packages))
	var conv, spend float64
	for i, p := range b.Packages {
		rows[i] = deliveryRow{BuyID: b.ID, PackageID: p.PackageID, Day: day, Impressions: imps[i], Clicks: clicks[i]}
		if i == len(b.Packages)-1 { // the rest, so that the parts add up
			rows[i].Conversions, rows[i].Spend = d.Conversions-conv, d.ReportedSpend.Amount-spend
			break
		}
		rows[i].Conversions, rows[i].Spend = d.Conversions*shares[i], d.ReportedSpend.Amount*shares[i]
		conv, spend = conv+rows[i].Conversions, spend+rows[i].Spend
	}
	return rows
}

// apportion splits n into whole parts in the proportions shares (which sum
// to 1): each part is rounded down, and what is left goes one by one to
// the largest remainders, the first package first on a tie.
func apportion(n int64, shares []float64) []int64 {
	parts := make([]int64, len(shares))
	rest := make([]float64, len(shares))
	left := n
	for i, s := range shares {
		exact := float64(n) * s
		parts[i] = int64(math.Floor(exact))
		rest[i] = exact - float64(parts[i])
		left -= parts[i]
	}
	order := make([]int, len(shares))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case rest[a] > rest[b]:
			return -1
		case rest[a] < rest[b]:
			return 1
		}
		return 0
	})
	for i := 0; left > 0 && len(order) > 0; i = (i + 1) % len(order) {
		parts[order[i]]++
		left--
	}
	return parts
}

type deliveryResponse struct {
	ReportingPeriod    period        `json:"reporting_period"`
	Currency           string        `json:"currency"`
	AggregatedTotals   *aggregated   `json:"aggregated_totals,omitempty"`
	MediaBuyDeliveries []buyDelivery `json:"media_buy_deliveries"`
	Errors             []*adcp.Error `json:"errors,omitempty"`
	Sandbox            bool          `json:"sandbox,omitempty"`
}

type period struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// metrics are the delivery metrics this seller reports
// (core/delivery-metrics.json).
type metrics struct {
	Impressions int64    `json:"impressions"`
	Spend       float64  `json:"spend"`
	Clicks      int64    `json:"clicks"`
	CTR         *float64 `json:"ctr,omitempty"`
	Conversions float64  `json:"conversions"`
}

func (m *metrics) add(r deliveryRow) {
	m.Impressions += r.Impressions
	m.Spend += r.Spend
	m.Clicks += r.Clicks
	m.Conversions += r.Conversions
}

// withCTR sets the click-through rate, when there were impressions.
func (m metrics) withCTR() metrics {
	if m.Impressions > 0 {
		ctr := float64(m.Clicks) / float64(m.Impressions)
		m.CTR = &ctr
	}
	return m
}

type aggregated struct {
	Impressions   int64   `json:"impressions"`
	Spend         float64 `json:"spend"`
	Clicks        int64   `json:"clicks"`
	Conversions   float64 `json:"conversions"`
	MediaBuyCount int     `json:"media_buy_count"`
}

type buyDelivery struct {
	MediaBuyID string            `json:"media_buy_id"`
	Status     string            `json:"status"`
	Totals     metrics           `json:"totals"`
	ByPackage  []packageDelivery `json:"by_package"`
}

type packageDelivery struct {
	metrics
	PackageID    string  `json:"package_id"`
	PricingModel string  `json:"pricing_model"`
	Rate         float64 `json:"rate"`
	Currency     string  `json:"currency"`
	Paused       bool    `json:"paused"`
	// DailyBreakdown is present, even empty, when the request asked for
	// include_package_daily_breakdown.
	DailyBreakdown []dayDelivery `json:"daily_breakdown,omitzero"`
}

type dayDelivery struct {
	Date        string  `json:"date"`
	Impressions int64   `json:"impressions"`
	Spend       float64 `json:"spend"`
}

// mediaBuyStatuses are AdCP's media buy statuses (enums/media-buy-status.json),
// which status_filter takes.
var mediaBuyStatuses = []string{"pending_creatives", "pending_start", "active", "paused", "completed", "rejected", "canceled"}

// getMediaBuyDelivery is get_media_buy_delivery: the delivery of the
// caller's media buys, all or those named, optionally within one account
// and of some statuses, for their lifetime or the days start_date to
// end_date (UTC). A named media buy the caller does not have is answered
// in errors (MEDIA_BUY_NOT_FOUND), beside the others' delivery.
func (s *Seller) getMediaBuyDelivery(ctx context.Context, c *adcp.Call) (deliveryResponse, error) {
	var req deliveryRequest
	if err := c.Decode(&req); err != nil {
		return deliveryResponse{}, err
	}
	if len(req.MediaBuyIDs) > 100 {
		return deliveryResponse{}, badRequest("media_buy_ids", "at most 100 media_buy_ids per call")
	}
	if present(req.TimeGranularity) != nil {
		return deliveryResponse{}, &adcp.Error{Code: "UNSUPPORTED_GRANULARITY", Recovery: "correctable", Field: "time_granularity",
			Message: "this seller's products declare no windowed_pull_granularities: omit time_granularity for date-range reporting"}
	}
	statuses, err := statusFilter(req.StatusFilter)
	if err != nil {
		return deliveryResponse{}, err
	}
	from, to, err := dateRange(req.StartDate, req.EndDate)
	if err != nil {
		return deliveryResponse{}, err
	}
	buys, err := s.store.buys(ctx, c.Principal, req.MediaBuyIDs)
	if err != nil {
		return deliveryResponse{}, err
	}
	out := deliveryResponse{MediaBuyDeliveries: []buyDelivery{}}
	for i, id := range req.MediaBuyIDs {
		if !slices.ContainsFunc(buys, func(b mediaBuy) bool { return b.ID == id }) {
			out.Errors = append(out.Errors, &adcp.Error{Code: "MEDIA_BUY_NOT_FOUND", Recovery: "correctable", Field: fmt.Sprintf("media_buy_ids[%d]", i),
				Message: "no media buy with this media_buy_id for the caller"})
		}
	}
	acct := accountKey(req.Account)
	buys = slices.DeleteFunc(buys, func(b mediaBuy) bool {
		return (acct != "" && b.Account.AccountID != acct) || (len(statuses) > 0 && !slices.Contains(statuses, b.Status))
	})
	ids := make([]string, len(buys))
	for i, b := range buys {
		ids[i] = b.ID
	}
	rows, err := s.store.deliveries(ctx, c.Principal, ids)
	if err != nil {
		return deliveryResponse{}, err
	}
	rows = slices.DeleteFunc(rows, func(r deliveryRow) bool { return (from != "" && r.Day < from) || (to != "" && r.Day > to) })

	now := time.Now().UTC().Truncate(time.Second)
	start, end := now, now
	currencies := map[string]bool{}
	total := aggregated{MediaBuyCount: len(buys)}
	for _, b := range buys {
		if at := b.ConfirmedAt.UTC().Truncate(time.Second); at.Before(start) {
			start = at
		}
		currencies[b.Currency] = true
		d := s.buyDelivery(b, rows, req.IncludePackageDailyBreakdown)
		total.Impressions += d.Totals.Impressions
		total.Spend += d.Totals.Spend
		total.Clicks += d.Totals.Clicks
		total.Conversions += d.Totals.Conversions
		out.MediaBuyDeliveries = append(out.MediaBuyDeliveries, d)
	}
	if from != "" {
		start, _ = time.Parse(time.DateOnly, from)
	}
	if to != "" {
		day, _ := time.Parse(time.DateOnly, to)
		end = day.Add(24*time.Hour - time.Second)
	}
	if end.Before(start) {
		end = start
	}
	out.ReportingPeriod = period{Start: start.Format(time.RFC3339), End: end.Format(time.RFC3339)}
	out.Currency = "USD"
	if len(buys) > 0 {
		out.Currency = buys[0].Currency
	}
	// Totals across currencies would add up amounts that do not add up.
	if len(currencies) <= 1 {
		out.AggregatedTotals = &total
	}
	// The only delivery this seller has is simulate_delivery's.
	out.Sandbox = len(rows) > 0
	return out, nil
}

// buyDelivery is b's delivery from rows (those of every media buy
// reported), by package and, with daily, by package and day.
func (s *Seller) buyDelivery(b mediaBuy, rows []deliveryRow, daily bool) buyDelivery {
	d := buyDelivery{MediaBuyID: b.ID, Status: b.Status, ByPackage: make([]packageDelivery, 0, len(b.Packages))}
	for _, r := range rows {
		if r.BuyID == b.ID {
			d.Totals.add(r)
		}
	}
	d.Totals = d.Totals.withCTR()
	for _, p := range b.Packages {
		pd := packageDelivery{PackageID: p.PackageID, Currency: b.Currency, Paused: p.Paused}
		if daily {
			pd.DailyBreakdown = []dayDelivery{}
		}
		for _, r := range rows {
			if r.BuyID == b.ID && r.PackageID == p.PackageID {
				pd.add(r)
				if daily {
					pd.DailyBreakdown = append(pd.DailyBreakdown, dayDelivery{Date: r.Day, Impressions: r.Impressions, Spend: r.Spend})
				}
			}
		}
		pd.metrics = pd.withCTR()
		pd.PricingModel, pd.Rate = s.packageRate(p, pd.metrics)
		d.ByPackage = append(d.ByPackage, pd)
	}
	return d
}

// packageRate is the pricing model and rate of p: the pricing option's
// fixed price, or the package's bid; for a package whose pricing option
// the catalog no longer has (a seeded media buy's), CPM at the rate its
// delivery shows.
func (s *Seller) packageRate(p pkg, m metrics) (string, float64) {
	po, _, ok := s.catalog.pricing(p.ProductID, p.PricingOptionID)
	model := "cpm"
	if ok && po.Model != "" {
		model = po.Model
	}
	switch {
	case ok && po.Fixed != nil:
		return model, *po.Fixed
	case p.BidPrice != nil:
		return model, *p.BidPrice
	case m.Impressions > 0:
		return model, m.Spend / float64(m.Impressions) * 1000
	}
	return model, 0
}

// statusFilter reads get_media_buy_delivery's status_filter: a status or
// a non-empty list of them.
func statusFilter(raw json.RawMessage) ([]string, error) {
	if present(raw) == nil {
		return nil, nil
	}
	var one string
	var list []string
	if json.Unmarshal(raw, &one) == nil {
		list = []string{one}
	} else if json.Unmarshal(raw, &list) != nil || len(list) == 0 {
		return nil, badRequest("status_filter", "status_filter must be a media buy status or a non-empty array of them")
	}
	for _, st := range list {
		if !slices.Contains(mediaBuyStatuses, st) {
			return nil, badRequest("status_filter", "each status_filter status must be one of "+strings.Join(mediaBuyStatuses, ", "))
		}
	}
	return list, nil
}

// dateRange checks start_date and end_date (YYYY-MM-DD, either may be
// omitted) and returns them.
func dateRange(start, end string) (string, string, error) {
	for _, d := range []struct{ field, value string }{{"start_date", start}, {"end_date", end}} {
		if d.value == "" {
			continue
		}
		if t, err := time.Parse(time.DateOnly, d.value); err != nil || t.Format(time.DateOnly) != d.value {
			return "", "", badRequest(d.field, d.field+" must be a date, YYYY-MM-DD")
		}
	}
	if start != "" && end != "" && end < start {
		return "", "", badRequest("end_date", "end_date must not be before start_date")
	}
	return start, end, nil
}
