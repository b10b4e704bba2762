package seller

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller/sellerdb"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/migrations"
)

//go:embed schema/*.sql
var schemaFiles embed.FS

var schemaFS, _ = fs.Sub(schemaFiles, "schema")

// postgresStore keeps everything in Postgres. A mutating tool runs in
// idem.RunInTx: the media buy, its webhook event (a transactional outbox
// row) and the stored answer commit in one transaction; a dispatcher
// delivers the events after commit.
type postgresStore struct {
	db       *pgxpool.Pool
	idem     *idem.Store
	q        sellerdb.Queries
	poster   *poster
	log      *slog.Logger
	interval time.Duration
	nudge    chan struct{}
}

// newPostgresStore applies the library's and the seller's migrations, then
// returns the store.
func newPostgresStore(ctx context.Context, pool *pgxpool.Pool, cfg *idem.Config, p *poster, log *slog.Logger, interval time.Duration) (*postgresStore, error) {
	if err := migrate(ctx, pool); err != nil {
		return nil, err
	}
	st, err := idem.NewStore(cfg)
	if err != nil {
		return nil, err
	}
	return &postgresStore{db: pool, idem: st, poster: p, log: log, interval: cmp.Or(interval, time.Second), nudge: make(chan struct{}, 1)}, nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		return err
	}
	return migrateSeller(ctx, db)
}

func migrateSeller(ctx context.Context, db *sql.DB) error {
	store, err := database.NewStore(database.DialectPostgres, "adcp_seller_db_version")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider("", db, schemaFS, goose.WithStore(store), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("seller migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("seller migrations: %w", err)
	}
	return nil
}

func (s *postgresStore) mode() string { return "postgres" }

func (s *postgresStore) capability() idem.Capability { return s.idem.Capability() }

// mutating runs h inside RunInTx and wakes the dispatcher after each
// success, so that a webhook leaves right after its transaction commits.
func (s *postgresStore) mutating(opts *adcpmcp.Options, h func(context.Context, writer, *adcp.Call) (any, error)) mcp.ToolHandler {
	handler := adcpmcp.MutatingTx(s.idem, s.db, opts, func(ctx context.Context, tx pgx.Tx, c *adcp.Call) (any, error) {
		return h(ctx, txWriter{s, tx}, c)
	})
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := handler(ctx, req)
		if err == nil && res != nil && !res.IsError {
			select {
			case s.nudge <- struct{}{}:
			default:
			}
		}
		return res, err
	}
}

// txWriter writes through the idempotent transaction.
type txWriter struct {
	s  *postgresStore
	tx pgx.Tx
}

func (w txWriter) addBuy(ctx context.Context, principal string, b mediaBuy) error {
	err := w.s.q.MediaBuyInsert(ctx, w.tx, sellerdb.MediaBuyInsertParams{
		MediaBuyID: b.MediaBuyID, PrincipalID: principal, Account: b.account, Status: b.Status,
		Currency: b.Currency, TotalBudget: b.TotalBudget, StartTime: b.StartTime, EndTime: b.EndTime,
		Packages: mustJSON(b.Packages),
	})
	if err != nil {
		return fmt.Errorf("storing the media buy: %w", err)
	}
	return nil
}

func (w txWriter) enqueue(ctx context.Context, e event) error {
	if err := w.s.q.OutboxInsert(ctx, w.tx, sellerdb.OutboxInsertParams{MediaBuyID: e.mediaBuyID, URL: e.url, Body: e.body}); err != nil {
		return fmt.Errorf("queueing the webhook: %w", err)
	}
	return nil
}

func (s *postgresStore) list(ctx context.Context, principal string, ids []string) ([]mediaBuy, error) {
	rows, err := s.q.MediaBuyList(ctx, s.db, sellerdb.MediaBuyListParams{PrincipalID: principal, IDs: append([]string{}, ids...)})
	if err != nil {
		return nil, err
	}
	out := []mediaBuy{}
	for _, r := range rows {
		b := mediaBuy{MediaBuyID: r.MediaBuyID, Status: r.Status, Currency: r.Currency, TotalBudget: r.TotalBudget,
			StartTime: r.StartTime, EndTime: r.EndTime, ConfirmedAt: r.CreatedAt.UTC().Format(time.RFC3339)}
		if err := json.Unmarshal(r.Packages, &b.Packages); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (s *postgresStore) count(ctx context.Context, principal string) (int, error) {
	n, err := s.q.MediaBuyCount(ctx, s.db, principal)
	return int(n), err
}

// run delivers the outbox and sweeps expired idempotency keys every
// minute, until ctx ends.
func (s *postgresStore) run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.dispatch(ctx)
	}()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case <-t.C:
			if n, err := s.idem.Sweep(ctx, s.db); err != nil {
				s.log.Warn("sweep failed", "error", err)
			} else if n > 0 {
				s.log.Info("swept idempotency keys", "deleted", n)
			}
		}
	}
}

func (s *postgresStore) close() {}

// dispatch delivers the outbox: events whose transaction has committed, at
// least once, with retries and backoff. It leases rows so that several
// seller processes on one database never send one event at once; a crash
// between a delivery and its bookkeeping sends the event again, with the
// same idempotency_key, which receivers drop as a duplicate.
func (s *postgresStore) dispatch(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		for s.dispatchBatch(ctx) {
		}
		select {
		case <-ctx.Done():
			return
		case <-s.nudge:
		case <-t.C:
		}
	}
}

// dispatchBatch sends one batch of due events and reports whether there may
// be more.
func (s *postgresStore) dispatchBatch(ctx context.Context) bool {
	const batch = 16
	rows, err := s.q.OutboxLease(ctx, s.db, sellerdb.OutboxLeaseParams{LeaseMs: 60_000, MaxRows: batch})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("outbox: leasing events failed", "error", err)
		}
		return false
	}
	for _, r := range rows {
		err := s.poster.post(ctx, event{url: r.URL, body: r.Body})
		if err == nil {
			if err := s.q.OutboxDelivered(ctx, s.db, r.ID); err != nil {
				s.log.Warn("outbox: marking an event delivered failed; it will be sent again", "id", r.ID, "error", err)
			}
			continue
		}
		delay := backoff(int(r.Attempts))
		if r.Attempts >= maxAttempts {
			delay = 100 * 365 * 24 * time.Hour // parked; visible in the table for an operator
		}
		s.log.Warn("outbox: webhook delivery failed; will retry", "id", r.ID, "attempt", r.Attempts, "retry_in", delay, "error", err)
		if err := s.q.OutboxRetryLater(ctx, s.db, sellerdb.OutboxRetryLaterParams{ID: r.ID, LastError: err.Error(), DelayMs: delay.Milliseconds()}); err != nil {
			s.log.Warn("outbox: recording a failed attempt failed", "id", r.ID, "error", err)
		}
	}
	return len(rows) == batch
}
