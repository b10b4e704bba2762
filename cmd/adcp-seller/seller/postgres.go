package seller

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller/sellerdb"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/migrations"
	"github.com/adcp-go/idempotency/webhook"
	"github.com/adcp-go/idempotency/webhook/riverdelivery"
)

//go:embed schema/*.sql
var schemaFiles embed.FS

var schemaFS, _ = fs.Sub(schemaFiles, "schema")

// postgresStore keeps everything in Postgres. A mutating tool runs in
// idem.RunInTx: its media buy or task, its webhook job and its task's
// scheduled completion (River jobs, inserted in the same transaction) and
// the stored answer commit together or not at all. River delivers the
// webhooks and runs the completions, on every seller replica, each job
// once at a time.
type postgresStore struct {
	db    *pgxpool.Pool
	idem  *idem.Store
	reads *idem.Guard
	q     sellerdb.Queries
	river *river.Client[pgx.Tx]
	log   *slog.Logger
}

// completeArgs is the River job that completes a submitted task.
type completeArgs struct {
	TaskID string `json:"task_id"`
}

// Kind implements river.JobArgs.
func (completeArgs) Kind() string { return "adcp_seller_complete_task" }

// completeWorker runs completeArgs jobs. Completing a task that is no
// longer submitted does nothing, so a job that runs again (a crash after
// the completion committed and before River recorded it) is harmless.
type completeWorker struct {
	river.WorkerDefaults[completeArgs]
	complete func(ctx context.Context, id string) error
}

func (w *completeWorker) Work(ctx context.Context, job *river.Job[completeArgs]) error {
	return w.complete(ctx, job.Args.TaskID)
}

// newPostgresStore applies the library's, River's and the seller's
// migrations, then returns the store. complete finishes a task by id.
func newPostgresStore(ctx context.Context, pool *pgxpool.Pool, cfg *idem.Config, sender *webhook.Sender, log *slog.Logger, complete func(context.Context, string) error) (*postgresStore, error) {
	if err := migrate(ctx, pool); err != nil {
		return nil, err
	}
	st, err := idem.NewStore(cfg)
	if err != nil {
		return nil, err
	}
	reads, err := idem.NewGuard(&idem.PostgresBackend{DB: pool}, cfg)
	if err != nil {
		return nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, riverdelivery.NewWorker(sender))
	river.AddWorker(workers, &completeWorker{complete: complete})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 16}},
		Workers: workers,
		Logger:  log.With("component", "river"),
		// A job of a replica that died while running it is given back
		// after RescueStuckJobsAfter (River's default: an hour). One
		// attempt takes at most the sender's timeout (10 s) and a
		// completion a few statements, so three minutes is ample, and a
		// crashed replica's webhooks wait minutes, not an hour.
		JobTimeout:           time.Minute,
		RescueStuckJobsAfter: 3 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("seller: river: %w", err)
	}
	return &postgresStore{db: pool, idem: st, reads: reads, river: client, log: log}, nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		return err
	}
	if err := riverdelivery.Migrate(ctx, pool); err != nil {
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

func (s *postgresStore) guard() *idem.Guard { return s.reads }

func (s *postgresStore) mutating(opts *adcp.Options, h func(context.Context, writer, *adcp.Call) (any, error)) adcp.Runner {
	return adcp.MutatingTx(s.idem, s.db, opts, func(ctx context.Context, tx pgx.Tx, c *adcp.Call) (any, error) {
		return h(ctx, &txWriter{s: s, tx: tx}, c)
	})
}

// txWriter writes through a transaction: the idempotent request's, or a
// task completion's.
type txWriter struct {
	s  *postgresStore
	tx pgx.Tx
}

func (w *txWriter) buy(ctx context.Context, principal, id string) (mediaBuy, bool, error) {
	rows, err := w.s.q.MediaBuyForUpdate(ctx, w.tx, sellerdb.MediaBuyForUpdateParams{PrincipalID: principal, MediaBuyID: id})
	if err != nil || len(rows) == 0 {
		return mediaBuy{}, false, err
	}
	r := rows[0]
	b, err := decodeBuy(principal, r.MediaBuyID, r.Account, r.Name, r.Status, r.Currency, r.TotalBudget, r.StartTime, r.EndTime, r.Revision, r.Packages, r.ConfirmedAt)
	return b, err == nil, err
}

func (w *txWriter) account(ctx context.Context, principal, id string) (account, bool, error) {
	rows, err := w.s.q.AccountGet(ctx, w.tx, sellerdb.AccountGetParams{PrincipalID: principal, AccountID: id})
	return decodeAccount(rows, err)
}

func (w *txWriter) accountForUpdate(ctx context.Context, principal, id string) (account, bool, error) {
	rows, err := w.s.q.AccountForUpdate(ctx, w.tx, sellerdb.AccountForUpdateParams{PrincipalID: principal, AccountID: id})
	return decodeAccount(rows, err)
}

// decodeAccount is the account an AccountGet or AccountForUpdate found.
func decodeAccount(rows [][]byte, err error) (account, bool, error) {
	if err != nil || len(rows) == 0 {
		return account{}, false, err
	}
	var a account
	err = json.Unmarshal(rows[0], &a)
	return a, err == nil, err
}

func (w *txWriter) putAccount(ctx context.Context, principal string, a account) error {
	if err := w.s.q.AccountUpsert(ctx, w.tx, sellerdb.AccountUpsertParams{PrincipalID: principal, AccountID: a.AccountID, Account: mustJSON(a)}); err != nil {
		return fmt.Errorf("storing the account: %w", err)
	}
	return nil
}

func (w *txWriter) openAccount(ctx context.Context, principal string, a account) error {
	if err := w.s.q.AccountInsertIfAbsent(ctx, w.tx, sellerdb.AccountInsertIfAbsentParams{PrincipalID: principal, AccountID: a.AccountID, Account: mustJSON(a)}); err != nil {
		return fmt.Errorf("opening the account: %w", err)
	}
	return nil
}

func (w *txWriter) taskExists(ctx context.Context, id string) (bool, error) {
	return w.s.q.TaskExists(ctx, w.tx, id)
}

func (w *txWriter) putBuy(ctx context.Context, b mediaBuy, isNew bool) error {
	var err error
	if isNew {
		err = w.s.q.MediaBuyInsert(ctx, w.tx, sellerdb.MediaBuyInsertParams{
			MediaBuyID: b.ID, PrincipalID: b.Principal, AccountID: b.Account.AccountID, Account: mustJSON(b.Account), Name: b.Name,
			Status: b.Status, Currency: b.Currency, TotalBudget: b.TotalBudget, StartTime: b.StartTime, EndTime: b.EndTime,
			Revision: int32(b.Revision), Packages: mustJSON(b.Packages), ConfirmedAt: b.ConfirmedAt,
		})
	} else {
		err = w.s.q.MediaBuyUpdate(ctx, w.tx, sellerdb.MediaBuyUpdateParams{
			Status: b.Status, TotalBudget: b.TotalBudget, EndTime: b.EndTime, Revision: int32(b.Revision),
			Packages: mustJSON(b.Packages), PrincipalID: b.Principal, MediaBuyID: b.ID,
		})
	}
	if err != nil {
		return fmt.Errorf("storing the media buy: %w", err)
	}
	return nil
}

func (w *txWriter) putTask(ctx context.Context, t task, isNew bool) error {
	var buy []byte
	if t.Buy != nil {
		buy = mustJSON(t.Buy)
	}
	var err error
	if isNew {
		var push []byte
		if t.Push != nil {
			push = mustJSON(t.Push)
		}
		err = w.s.q.TaskInsert(ctx, w.tx, sellerdb.TaskInsertParams{
			TaskID: t.ID, PrincipalID: t.Principal, TaskType: t.Type, Status: t.Status, Version: t.Version,
			Buy: buy, Push: push, Context: nullJSON(t.Context), Result: nullJSON(t.Result),
			CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, CompletedAt: t.CompletedAt,
		})
	} else {
		err = w.s.q.TaskUpdate(ctx, w.tx, sellerdb.TaskUpdateParams{
			Status: t.Status, Buy: buy, Result: nullJSON(t.Result), UpdatedAt: t.UpdatedAt, CompletedAt: t.CompletedAt, TaskID: t.ID,
		})
	}
	if err != nil {
		return fmt.Errorf("storing the task: %w", err)
	}
	return nil
}

func (w *txWriter) notify(ctx context.Context, d webhook.Delivery) error {
	if _, err := riverdelivery.Enqueue(ctx, w.s.river, w.tx, d, nil); err != nil {
		return fmt.Errorf("queueing the webhook: %w", err)
	}
	return nil
}

func (w *txWriter) schedule(ctx context.Context, id string, delay time.Duration) error {
	if _, err := w.s.river.InsertTx(ctx, w.tx, completeArgs{TaskID: id}, &river.InsertOpts{ScheduledAt: time.Now().Add(delay)}); err != nil {
		return fmt.Errorf("scheduling the task: %w", err)
	}
	return nil
}

func (s *postgresStore) buys(ctx context.Context, principal string, ids []string) ([]mediaBuy, error) {
	rows, err := s.q.MediaBuyList(ctx, s.db, sellerdb.MediaBuyListParams{PrincipalID: principal, IDs: append([]string{}, ids...)})
	if err != nil {
		return nil, err
	}
	out := []mediaBuy{}
	for _, r := range rows {
		b, err := decodeBuy(principal, r.MediaBuyID, r.Account, r.Name, r.Status, r.Currency, r.TotalBudget, r.StartTime, r.EndTime, r.Revision, r.Packages, r.ConfirmedAt)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func decodeBuy(principal, id string, acct []byte, name, status, currency string, budget float64, start, end string, revision int32, packages []byte, confirmed time.Time) (mediaBuy, error) {
	b := mediaBuy{ID: id, Principal: principal, Name: name, Status: status, Currency: currency, TotalBudget: budget,
		StartTime: start, EndTime: end, Revision: int(revision), ConfirmedAt: confirmed.UTC()}
	if err := json.Unmarshal(acct, &b.Account); err != nil {
		return b, fmt.Errorf("reading media buy %s: %w", id, err)
	}
	if err := json.Unmarshal(packages, &b.Packages); err != nil {
		return b, fmt.Errorf("reading media buy %s: %w", id, err)
	}
	return b, nil
}

func (s *postgresStore) seedBuy(ctx context.Context, b mediaBuy) (bool, error) {
	fresh := false
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		w := &txWriter{s: s, tx: tx}
		_, found, err := w.buy(ctx, b.Principal, b.ID)
		if err != nil {
			return err
		}
		fresh = !found
		if err := w.openAccount(ctx, b.Principal, b.Account); err != nil {
			return err
		}
		return w.putBuy(ctx, b, !found)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation: another principal's id
		return false, errSeedBuyTaken
	}
	return fresh, err
}

func (s *postgresStore) putCreative(ctx context.Context, principal, id string, creative json.RawMessage) (bool, error) {
	fresh, err := s.q.CreativeUpsert(ctx, s.db, sellerdb.CreativeUpsertParams{PrincipalID: principal, CreativeID: id, Creative: creative})
	if err != nil {
		return false, fmt.Errorf("storing the creative: %w", err)
	}
	return fresh, nil
}

func (s *postgresStore) creatives(ctx context.Context, principal string) ([]json.RawMessage, error) {
	rows, err := s.q.CreativeList(ctx, s.db, principal)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(rows))
	for _, r := range rows {
		out = append(out, json.RawMessage(r))
	}
	return out, nil
}

func (s *postgresStore) addDelivery(ctx context.Context, principal string, rows []deliveryRow) error {
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		for _, r := range rows {
			if err := s.q.DeliveryAdd(ctx, tx, sellerdb.DeliveryAddParams{PrincipalID: principal, MediaBuyID: r.BuyID, PackageID: r.PackageID, Day: r.Day,
				Impressions: r.Impressions, Clicks: r.Clicks, Conversions: r.Conversions, Spend: r.Spend}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing the delivery: %w", err)
	}
	return nil
}

func (s *postgresStore) deliveries(ctx context.Context, principal string, ids []string) ([]deliveryRow, error) {
	rows, err := s.q.DeliveryList(ctx, s.db, sellerdb.DeliveryListParams{PrincipalID: principal, IDs: append([]string{}, ids...)})
	if err != nil {
		return nil, err
	}
	out := make([]deliveryRow, len(rows))
	for i, r := range rows {
		out[i] = deliveryRow{BuyID: r.MediaBuyID, PackageID: r.PackageID, Day: r.Day, Impressions: r.Impressions, Clicks: r.Clicks, Conversions: r.Conversions, Spend: r.Spend}
	}
	return out, nil
}

func (s *postgresStore) count(ctx context.Context, principal string) (int, error) {
	n, err := s.q.MediaBuyCount(ctx, s.db, principal)
	return int(n), err
}

func (s *postgresStore) accounts(ctx context.Context, principal string) ([]account, error) {
	rows, err := s.q.AccountList(ctx, s.db, principal)
	if err != nil {
		return nil, err
	}
	out := make([]account, len(rows))
	for i, r := range rows {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *postgresStore) setAccountStatus(ctx context.Context, principal, id, status string) (string, bool, error) {
	var previous string
	found := false
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		w := &txWriter{s: s, tx: tx}
		a, ok, err := w.accountForUpdate(ctx, principal, id)
		if err != nil || !ok {
			return err
		}
		found, previous, a.Status = true, a.Status, status
		return w.putAccount(ctx, principal, a)
	})
	return previous, found && err == nil, err
}

func (s *postgresStore) task(ctx context.Context, principal, id string) (task, bool, error) {
	rows, err := s.q.TaskGet(ctx, s.db, sellerdb.TaskGetParams{TaskID: id, PrincipalID: principal})
	if err != nil || len(rows) == 0 {
		return task{}, false, err
	}
	t, err := decodeTask(rows[0])
	return t, err == nil, err
}

func decodeTask(r sellerdb.SellerTask) (task, error) {
	t := task{ID: r.TaskID, Principal: r.PrincipalID, Type: r.TaskType, Status: r.Status, Version: r.Version,
		Context: json.RawMessage(r.Context), Result: json.RawMessage(r.Result), CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), CompletedAt: r.CompletedAt}
	if r.Buy != nil {
		t.Buy = new(mediaBuy)
		if err := json.Unmarshal(r.Buy, t.Buy); err != nil {
			return t, fmt.Errorf("reading task %s: %w", r.TaskID, err)
		}
		t.Buy.Principal = r.PrincipalID
	}
	if r.Push != nil {
		t.Push = new(webhook.PushNotificationConfig)
		if err := json.Unmarshal(r.Push, t.Push); err != nil {
			return t, fmt.Errorf("reading task %s: %w", r.TaskID, err)
		}
	}
	return t, nil
}

// finish runs done on task id in one transaction, with the task locked, if
// it is still submitted.
func (s *postgresStore) finish(ctx context.Context, id string, done func(context.Context, writer, *task) error) (bool, error) {
	ran := false
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		rows, err := s.q.TaskForUpdate(ctx, tx, id)
		if err != nil || len(rows) == 0 || rows[0].Status != "submitted" {
			return err
		}
		t, err := decodeTask(rows[0])
		if err != nil {
			return err
		}
		ran = true
		return done(ctx, &txWriter{s: s, tx: tx}, &t)
	})
	return ran && err == nil, err
}

// run starts River (webhook deliveries and task completions) and sweeps
// expired idempotency keys every minute, until ctx ends; then it stops
// River, letting running jobs finish for up to 10 seconds.
func (s *postgresStore) run(ctx context.Context) error {
	if err := s.river.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("seller: starting river: %w", err)
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.river.Stop(stop); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return nil
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

// nullJSON is v, or SQL NULL when empty.
func nullJSON(v json.RawMessage) []byte {
	if len(v) == 0 {
		return nil
	}
	return v
}
