package seller

import (
	"context"
	"encoding/json"
	"time"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/webhook"
)

// store is where the seller keeps media buys and tasks, and how its
// mutating tools run at most once per key: in memory (memory.go) or in
// Postgres (postgres.go). The tools are written once, against it.
type store interface {
	// mode names the store: "memory" or "postgres".
	mode() string
	// capability is the adcp.idempotency fragment of the capabilities.
	capability() idem.Capability
	// mutating makes h the idempotent runner of a mutating tool. h writes
	// through the writer it gets: in Postgres, the transaction that also
	// stores the answer; in memory, writes applied only if h succeeds.
	mutating(opts *adcp.Options, h func(ctx context.Context, w writer, c *adcp.Call) (any, error)) adcp.Runner
	// guard runs keyed reads (adcp.Read).
	guard() *idem.Guard
	// buys returns principal's media buys, all of them or those named.
	buys(ctx context.Context, principal string, ids []string) ([]mediaBuy, error)
	// count reports how many media buys principal has.
	count(ctx context.Context, principal string) (int, error)
	// accounts returns principal's accounts (synced, or opened by a media
	// buy), oldest first.
	accounts(ctx context.Context, principal string) ([]account, error)
	// setAccountStatus sets the status of principal's account id and
	// returns the status it had; ok is false when there is no such
	// account.
	setAccountStatus(ctx context.Context, principal, id, status string) (previous string, ok bool, err error)
	// seedBuy stores a media buy comply_test_controller seeds, or replaces
	// the state of principal's buy of that id (reported fresh false); the
	// id of another principal's buy is refused (a *seedError).
	seedBuy(ctx context.Context, b mediaBuy) (fresh bool, err error)
	// putCreative stores a creative of principal's library (a JSON object
	// with its creative_id), or replaces the one of that id, and reports
	// whether it is new.
	putCreative(ctx context.Context, principal, id string, creative json.RawMessage) (fresh bool, err error)
	// creatives returns principal's creative library, oldest first.
	creatives(ctx context.Context, principal string) ([]json.RawMessage, error)
	// addDelivery adds rows (delivery of one of principal's media buys)
	// to what it has delivered, all of them or none.
	addDelivery(ctx context.Context, principal string, rows []deliveryRow) error
	// deliveries returns what principal's media buys ids delivered, by
	// media buy, package and day.
	deliveries(ctx context.Context, principal string, ids []string) ([]deliveryRow, error)
	// task returns principal's task id.
	task(ctx context.Context, principal, id string) (task, bool, error)
	// finish runs done on task id if it is still pending, atomically with
	// the writes done makes (in Postgres, one transaction), and reports
	// whether it ran.
	finish(ctx context.Context, id string, done func(ctx context.Context, w writer, t *task) error) (bool, error)
	// run does the store's background work (webhook delivery, task
	// completion, sweeping) until ctx ends.
	run(ctx context.Context) error
	// close releases what the store holds.
	close()
}

// writer is what a mutating tool, or a task's completion, writes through.
type writer interface {
	// buy reads one of principal's media buys for a change (in Postgres,
	// locked until the transaction ends).
	buy(ctx context.Context, principal, id string) (mediaBuy, bool, error)
	// account finds one of principal's accounts by id, without locking it
	// (a media buy reads its account; concurrent buys under one account do
	// not wait for each other).
	account(ctx context.Context, principal, id string) (account, bool, error)
	// accountForUpdate finds one of principal's accounts by id for a change
	// (in Postgres, locked until the transaction ends).
	accountForUpdate(ctx context.Context, principal, id string) (account, bool, error)
	// putAccount stores one of principal's accounts, new or changed.
	putAccount(ctx context.Context, principal string, a account) error
	// openAccount stores one of principal's accounts unless it exists
	// (the account a media buy is made under).
	openAccount(ctx context.Context, principal string, a account) error
	// taskExists reports whether a task id is taken (by anyone).
	taskExists(ctx context.Context, id string) (bool, error)
	// putBuy stores a new media buy, or a changed one.
	putBuy(ctx context.Context, b mediaBuy, isNew bool) error
	// putTask stores a new task, or a changed one.
	putTask(ctx context.Context, t task, isNew bool) error
	// notify queues a webhook for delivery once the writes are kept.
	notify(ctx context.Context, d webhook.Delivery) error
	// schedule has task id finished (Seller.completeTask) after delay,
	// once the writes are kept.
	schedule(ctx context.Context, id string, delay time.Duration) error
}

// mediaBuy is a media buy as the seller keeps it.
type mediaBuy struct {
	ID          string    `json:"media_buy_id"`
	Principal   string    `json:"-"`
	Account     account   `json:"account"`
	Name        string    `json:"name,omitempty"`
	Status      string    `json:"status"`
	Currency    string    `json:"currency"`
	TotalBudget float64   `json:"total_budget"`
	StartTime   string    `json:"start_time"`
	EndTime     string    `json:"end_time"`
	Revision    int       `json:"revision"`
	Packages    []pkg     `json:"packages"`
	ConfirmedAt time.Time `json:"confirmed_at"`
}

// pkg is a package of a media buy.
type pkg struct {
	PackageID       string   `json:"package_id"`
	ProductID       string   `json:"product_id"`
	PricingOptionID string   `json:"pricing_option_id"`
	Budget          float64  `json:"budget"`
	BidPrice        *float64 `json:"bid_price,omitempty"`
	Paused          bool     `json:"paused"`
	// Targeting is the buyer's targeting_overlay and Measurement the
	// measurement_terms the seller accepted, both as the buyer sent them.
	Targeting   json.RawMessage `json:"targeting_overlay,omitempty"`
	Measurement json.RawMessage `json:"measurement_terms,omitempty"`
}

// deliveryRow is what a package of a media buy delivered on a day (UTC,
// YYYY-MM-DD). PackageID is "" for a media buy without packages.
type deliveryRow struct {
	BuyID, PackageID, Day string
	Impressions, Clicks   int64
	Conversions, Spend    float64
}

// account is a buyer's account with this seller (core/account.json).
// sync_accounts provisions accounts; a media buy under a natural key
// (brand + operator) not synced before opens its account implicitly. Either
// way the id is derived from the natural key, so the same brand and
// operator always name one account.
type account struct {
	AccountID    string    `json:"account_id"`
	Name         string    `json:"name"`
	Status       string    `json:"status"`
	Brand        *brandRef `json:"brand,omitempty"`
	Operator     string    `json:"operator,omitempty"`
	Billing      string    `json:"billing,omitempty"`
	PaymentTerms string    `json:"payment_terms,omitempty"`
	AccountScope string    `json:"account_scope,omitempty"`
	Sandbox      bool      `json:"sandbox,omitempty"`
}

// task is an asynchronous operation: a create_media_buy answered
// "submitted", completed later (by its scheduled completion or by
// comply_test_controller's force_task_completion), and a synchronous
// create that registered a webhook under AdCP 3.0, recorded completed.
type task struct {
	ID          string
	Principal   string
	Type        string // create_media_buy
	Status      string // submitted, completed, failed
	Version     string // the AdCP release the request was served at
	Buy         *mediaBuy
	Push        *webhook.PushNotificationConfig
	Context     json.RawMessage // the originating request's context, echoed in webhooks
	Result      json.RawMessage // the terminal result
	CreatedAt   time.Time
	UpdatedAt   time.Time
	CompletedAt *time.Time
}
