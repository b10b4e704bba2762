package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller/sellerdb"
	"github.com/adcp-go/idempotency/idem"
)

// The miss path against the writes of the reference seller's
// create_media_buy (cmd/adcp-seller, Postgres mode, the synchronous arm
// without a webhook: a natural-key account, so no read), on the seller's own
// schema: one INSERT of the media buy into seller_media_buys, whose packages
// are a jsonb column of that row (the seller has no package table), through
// the seller's generated statement (sellerdb.MediaBuyInsert). The row is
// about 1 KB and has three indexes (the primary key, (principal_id,
// created_at) and (principal_id, account_id)).

// sellerPayload is a create_media_buy request as the seller takes it (1 100
// bytes): a natural-key account, two packages with targeting, a context.
var sellerPayload = json.RawMessage(`{"adcp_major_version":3,"idempotency_key":"6f1c2a9e-6c1b-4a7e-9d4f-0b9a8f3e2d1c","account":{"brand":{"domain":"acmeoutdoor.example"},"operator":"pinnacle-agency.example"},"brand":{"domain":"acmeoutdoor.example"},"name":"ACME Outdoor — Q3 2026 launch","po_number":"PO-2026-000417","start_time":"2026-07-01T00:00:00Z","end_time":"2026-09-30T23:59:59Z","packages":[{"product_id":"test-product","pricing_option_id":"test-pricing","budget":42468.48,"bid_price":28.5,"targeting_overlay":{"geo_country_any_of":["FR","ES"],"geo_region_any_of":["FR-IDF"],"geo_metro_any_of":["878"],"axe_include_segment":"seg_939643","frequency_cap":{"suppress_minutes":480},"keywords":["sports","outdoor","family travel"]}},{"product_id":"test-product","pricing_option_id":"test-pricing","budget":15000,"bid_price":12.75,"targeting_overlay":{"geo_country_any_of":["DE","AT","CH"],"frequency_cap":{"suppress_minutes":1440},"property_list":{"agent_url":"https://lists.example","list_id":"pl_premium_outdoor"}}}],"context":{"correlation_id":"c0rr-7d3f","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}`)

// The request and the media buy as the seller reads and stores them
// (cmd/adcp-seller/seller: wire.go's createRequest, store.go's mediaBuy,
// pkg and account), with the same JSON names, so that the stored account,
// packages and answer have the seller's sizes.
type (
	sellerBrand struct {
		Domain  string `json:"domain"`
		BrandID string `json:"brand_id,omitempty"`
	}
	sellerAccountRef struct {
		Brand    *sellerBrand `json:"brand,omitempty"`
		Operator string       `json:"operator,omitempty"`
	}
	sellerPackageRequest struct {
		ProductID       string          `json:"product_id"`
		PricingOptionID string          `json:"pricing_option_id"`
		Budget          float64         `json:"budget"`
		BidPrice        *float64        `json:"bid_price,omitempty"`
		Targeting       json.RawMessage `json:"targeting_overlay,omitempty"`
	}
	sellerCreateRequest struct {
		Account   *sellerAccountRef      `json:"account"`
		Name      string                 `json:"name,omitempty"`
		StartTime string                 `json:"start_time"`
		EndTime   string                 `json:"end_time"`
		Packages  []sellerPackageRequest `json:"packages"`
	}
	sellerAccount struct {
		AccountID string       `json:"account_id"`
		Name      string       `json:"name"`
		Status    string       `json:"status"`
		Brand     *sellerBrand `json:"brand,omitempty"`
		Operator  string       `json:"operator,omitempty"`
	}
	sellerPackage struct {
		PackageID       string          `json:"package_id"`
		ProductID       string          `json:"product_id"`
		PricingOptionID string          `json:"pricing_option_id"`
		Budget          float64         `json:"budget"`
		BidPrice        *float64        `json:"bid_price,omitempty"`
		Paused          bool            `json:"paused"`
		Targeting       json.RawMessage `json:"targeting_overlay,omitempty"`
	}
	// sellerAnswer is create_media_buy's synchronous answer (the seller's
	// buyAnswer at AdCP 3.1 and later).
	sellerAnswer struct {
		MediaBuyID     string          `json:"media_buy_id"`
		Account        sellerAccount   `json:"account"`
		ConfirmedAt    string          `json:"confirmed_at"`
		Revision       int             `json:"revision"`
		Currency       string          `json:"currency"`
		TotalBudget    float64         `json:"total_budget"`
		Packages       []sellerPackage `json:"packages"`
		Name           string          `json:"name,omitempty"`
		Status         string          `json:"media_buy_status"`
		IdempotencyKey string          `json:"idempotency_key"`
	}
)

// sellerCreate is the work of the seller's create_media_buy in tx: decode
// the request, make the media buy (the account from its natural key, a
// random id as the seller draws it), store it with the seller's statement,
// and encode the answer, as adcp.MutatingTx's handler returns it.
func sellerCreate(ctx context.Context, tx pgx.Tx, principal, key string, payload json.RawMessage) (json.RawMessage, error) {
	var req sellerCreateRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, err
	}
	if req.Account == nil || req.Account.Brand == nil {
		return nil, errors.New("no natural-key account")
	}
	acct := sellerAccount{AccountID: "acc_" + randomID(8), Name: req.Account.Brand.Domain + " c/o " + req.Account.Operator,
		Status: "active", Brand: req.Account.Brand, Operator: req.Account.Operator}
	a := sellerAnswer{MediaBuyID: "mb_" + randomID(8), Account: acct, Revision: 1, Currency: "USD", Name: req.Name,
		Status: "pending_creatives", IdempotencyKey: key}
	confirmed := time.Now().UTC().Truncate(time.Second)
	a.ConfirmedAt = confirmed.Format(time.RFC3339)
	for i, p := range req.Packages {
		a.Packages = append(a.Packages, sellerPackage{PackageID: fmt.Sprintf("%s_p%d", a.MediaBuyID, i+1), ProductID: p.ProductID,
			PricingOptionID: p.PricingOptionID, Budget: p.Budget, BidPrice: p.BidPrice, Targeting: p.Targeting})
		a.TotalBudget += p.Budget
	}
	accountJSON, err := json.Marshal(acct)
	if err != nil {
		return nil, err
	}
	packagesJSON, err := json.Marshal(a.Packages)
	if err != nil {
		return nil, err
	}
	var q sellerdb.Queries
	if err := q.MediaBuyInsert(ctx, tx, sellerdb.MediaBuyInsertParams{
		MediaBuyID: a.MediaBuyID, PrincipalID: principal, AccountID: acct.AccountID, Account: accountJSON, Name: req.Name,
		Status: a.Status, Currency: a.Currency, TotalBudget: a.TotalBudget, StartTime: req.StartTime, EndTime: req.EndTime,
		Revision: 1, Packages: packagesJSON, ConfirmedAt: confirmed,
	}); err != nil {
		return nil, err
	}
	return json.Marshal(a)
}

// sellerSetup applies the seller's schema (its migrations, as the seller
// does at start, from cmd/adcp-seller/seller/schema) to the benchmark's
// schema.
func sellerSetup(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	store, err := database.NewStore(database.DialectPostgres, "adcp_seller_db_version")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider("", db, os.DirFS("../cmd/adcp-seller/seller/schema"), goose.WithStore(store), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// sellerScope is the account scope of the seller's requests (the natural
// key's idem.AccountScope, as adcp computes it for an AdCP 3.1+ request),
// computed once: it is the adcp layer's work, not RunInTx's.
var sellerScope = func() string {
	s, err := idem.AccountScope([]byte("a benchmark account salt"), []byte(`{"brand":{"domain":"acmeoutdoor.example"},"operator":"pinnacle-agency.example"}`))
	if err != nil {
		panic(err)
	}
	return s
}()

// BenchmarkPostgresMissSeller compares idem.RunInTx on a fresh key
// (impl=RunInTx, the library's pipelined path on a pool) with the same
// create_media_buy writes in a plain transaction (impl=plain-tx: BEGIN, the
// seller's INSERT, COMMIT), at c=1 and c=16, on the seller's schema (see
// sellerCreate). Both sides decode the request and encode the answer; the
// library also hashes the request, claims the key and stores the answer.
// The goal (issue 19) is RunInTx/plain-tx <= 1.15 at c=16.
func BenchmarkPostgresMissSeller(b *testing.B) {
	d := benchSchema(b, "miss_seller", sellerSetup)
	s := newStore(b, nil)
	plain := func(ctx context.Context, i int64) error {
		tx, err := d.pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if _, err := sellerCreate(ctx, tx, benchPrincipal(i), benchMissKey(i), sellerPayload); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	runInTx := func(ctx context.Context, i int64) error {
		p, key := benchPrincipal(i), benchMissKey(i)
		res, err := idem.RunInTx(ctx, s, d.pool, idem.Request{
			Principal: p, Account: sellerScope, Key: key, Operation: "create_media_buy", Payload: sellerPayload,
		}, func(ctx context.Context, tx pgx.Tx) (json.RawMessage, error) {
			return sellerCreate(ctx, tx, p, key, sellerPayload)
		})
		if err == nil && res.Replayed {
			err = errors.New("a fresh key was replayed")
		}
		return err
	}
	for range benchRounds() {
		for _, c := range concurrencies {
			b.Run(fmt.Sprintf("c=%d/impl=plain-tx", c), func(b *testing.B) { measure(b, d, c, plain) })
			b.Run(fmt.Sprintf("c=%d/impl=RunInTx", c), func(b *testing.B) { measure(b, d, c, runInTx) })
		}
	}
}
