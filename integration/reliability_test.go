package integration

// The reliability suite of issue 7 (docs/RELIABILITY.md): crash matrices
// (crash_test.go), database faults (dbfault_test.go), concurrency storms
// (storm_test.go), hostile input, isolation and logs (hostile_test.go) and
// the soak (soak_test.go). Every test is named TestReliability*.
//
// The same tests run in two sizes. `make test` runs the bounded size, a few
// runs of each scenario; `make reliability` builds with the chaos tag
// (chaos_full_test.go), which selects the figures (20 kills per
// crash point, a 10-minute soak, ...). Environment variables override
// either size; see knob.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/idem"
)

// knob returns the environment variable IDEM_RELIABILITY_<name> if it is
// set, else full under the chaos build tag, else bounded.
func knob(name string, bounded, full int) int {
	if v := os.Getenv("IDEM_RELIABILITY_" + name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			panic(fmt.Sprintf("IDEM_RELIABILITY_%s=%q is not an integer", name, v))
		}
		return n
	}
	if reliabilityFull {
		return full
	}
	return bounded
}

// durationKnob is knob for durations (time.ParseDuration syntax).
func durationKnob(name string, bounded, full time.Duration) time.Duration {
	if v := os.Getenv("IDEM_RELIABILITY_" + name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			panic(fmt.Sprintf("IDEM_RELIABILITY_%s=%q is not a duration", name, v))
		}
		return d
	}
	if reliabilityFull {
		return full
	}
	return bounded
}

var figuresMu sync.Mutex

// figure logs one result line of the suite, "RELIABILITY <scenario>: ...",
// and appends it to the file IDEM_RELIABILITY_FIGURES names, if any (make
// reliability collects them there).
func figure(t testing.TB, scenario, format string, args ...any) {
	t.Helper()
	status := "ok"
	if t.Failed() {
		status = "FAILED"
	}
	line := fmt.Sprintf("RELIABILITY %s [%s]: %s", scenario, status, fmt.Sprintf(format, args...))
	t.Log(line)
	path := os.Getenv("IDEM_RELIABILITY_FIGURES")
	if path == "" {
		return
	}
	figuresMu.Lock()
	defer figuresMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("figures file: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), line)
}

// tally counts outcomes by name, safely from many goroutines.
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *tally) add(name string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
	c.mu.Unlock()
}

func (c *tally) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// String lists the counts in a stable order.
func (c *tally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.n))
	for k := range c.n {
		names = append(names, k)
	}
	// small maps: insertion sort keeps the import list short
	for i := 1; i < len(names); i++ {
		for j := i; j > 0 && names[j] < names[j-1]; j-- {
			names[j], names[j-1] = names[j-1], names[j]
		}
	}
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s=%d", k, c.n[k])
	}
	return strings.Join(parts, " ")
}

// The business table of the reliability tests: one row per execution,
// tagged with the idempotency key it ran for, without any unique
// constraint, so that a second execution of a key shows as a second row.
const chaosTable = `CREATE TABLE chaos_buys (
	id bigserial PRIMARY KEY, principal text NOT NULL, idem_key text NOT NULL, budget int NOT NULL)`

// chaosSchema is newSchema plus the chaos_buys table.
func chaosSchema(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := newSchema(t)
	if _, err := pool.Exec(context.Background(), chaosTable); err != nil {
		t.Fatalf("create chaos_buys: %v", err)
	}
	return pool
}

// chaosBuy is the answer of the chaos handler.
type chaosBuy struct {
	ID     int64 `json:"id"`
	Budget int   `json:"budget"`
}

// errBusinessWrite marks a failure of the chaos handler's own write.
var errBusinessWrite = errors.New("business write failed")

// chaosWrite is the handler: one business row through the transaction.
func chaosWrite(principal, key string, budget int) func(context.Context, pgx.Tx) (chaosBuy, error) {
	return func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
		b := chaosBuy{Budget: budget}
		err := tx.QueryRow(ctx, `INSERT INTO chaos_buys (principal, idem_key, budget) VALUES ($1, $2, $3) RETURNING id`,
			principal, key, budget).Scan(&b.ID)
		if err != nil {
			return b, fmt.Errorf("%w: %w", errBusinessWrite, err)
		}
		return b, nil
	}
}

func chaosPayload(budget int) string {
	return fmt.Sprintf(`{"brand":{"domain":"acme.example"},"packages":[{"product_id":"p1","budget":%d}]}`, budget)
}

// invariants checks the table-wide promise of RunInTx: every business row
// has its stored answer (naming it) and every stored answer its business
// row, one of each per key.
func invariants(t testing.TB, pool *pgxpool.Pool) (rows int) {
	t.Helper()
	ctx := context.Background()
	var orphans, lost, doubles int
	err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM chaos_buys b WHERE NOT EXISTS (
			SELECT 1 FROM idempotency_keys k WHERE k.principal_id = b.principal AND k.key = b.idem_key
			  AND k.response IS NOT NULL AND (convert_from(k.response, 'UTF8')::jsonb->>'id')::bigint = b.id)),
		(SELECT count(*) FROM idempotency_keys k WHERE k.response IS NOT NULL AND NOT EXISTS (
			SELECT 1 FROM chaos_buys b WHERE k.principal_id = b.principal AND k.key = b.idem_key)),
		(SELECT count(*) FROM (SELECT 1 FROM chaos_buys GROUP BY principal, idem_key HAVING count(*) > 1) d),
		(SELECT count(*) FROM chaos_buys)`).Scan(&orphans, &lost, &doubles, &rows)
	if err != nil {
		t.Fatalf("invariants: %v", err)
	}
	if orphans != 0 || lost != 0 || doubles != 0 {
		t.Errorf("%d business rows without their stored answer, %d stored answers without their business row, %d keys executed more than once",
			orphans, lost, doubles)
	}
	return rows
}

// classify names the outcome of a request for the tallies, and reports
// whether it is one of the clear outcomes the suite accepts: success, an
// *idem.Error with an AdCP code, a context error, or the handler's own
// write failing.
func classify(res idem.Result[chaosBuy], err error) (string, bool) {
	var e *idem.Error
	switch {
	case err == nil && res.Replayed:
		return "replayed", true
	case err == nil:
		return "executed", true
	case errors.Is(err, idem.ErrStorage):
		return "ErrStorage", true
	case errors.Is(err, idem.ErrInFlight):
		return "ErrInFlight", true
	case errors.Is(err, idem.ErrConflict):
		return "ErrConflict", true
	case errors.As(err, &e):
		return string(e.Code), true
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded", true
	case errors.Is(err, context.Canceled):
		return "Canceled", true
	case errors.Is(err, errBusinessWrite):
		return "handler error", true
	}
	return "UNCLASSIFIED", false
}

// retryUntilAnswered resends a request the way a buyer does after a fault:
// again on a transient error (storage, in flight), until it gets an answer,
// for at most a generous bound.
func retryUntilAnswered(ctx context.Context, s *idem.Store, pool idem.DB, req idem.Request, fn func(context.Context, pgx.Tx) (chaosBuy, error)) (idem.Result[chaosBuy], int, error) {
	deadline := time.Now().Add(90 * time.Second)
	for attempt := 1; ; attempt++ {
		res, err := idem.RunInTx(ctx, s, pool, req, fn)
		if err == nil || (!errors.Is(err, idem.ErrStorage) && !errors.Is(err, idem.ErrInFlight)) || time.Now().After(deadline) {
			return res, attempt, err
		}
		time.Sleep(time.Duration(min(attempt, 20)) * 25 * time.Millisecond)
	}
}

// Steps of a request as the database sees them, recognised by the SQL that
// pgx traces. The names are used by the crash points and by the fault
// injection.
const (
	stepBegin     = "begin"
	stepClaim     = "claim" // sets lock_timeout, claims (or reads) the key, restores lock_timeout
	stepRead      = "read"
	stepWrite     = "write" // the chaos handler's business write
	stepBuyInsert = "buy_insert"
	stepOutbox    = "outbox_insert" // a River job insert: the webhook's delivery job
	stepStore     = "store"
	stepCommit    = "commit"
	stepRollback  = "rollback"
	stepRelease   = "release"
	stepDelivered = "outbox_delivered" // River records a job's outcome (completed after a delivery)
)

func stepOf(sql string) string {
	switch {
	case sql == "begin":
		return stepBegin
	case sql == "commit":
		return stepCommit
	case sql == "rollback":
		return stepRollback
	case !strings.HasPrefix(sql, "-- name: "):
		if strings.HasPrefix(sql, "INSERT INTO chaos_buys") {
			return stepWrite
		}
		return ""
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(sql, "-- name: "), " ")
	switch name {
	case "IdempotencyKeyClaim", "IdempotencyKeyTakeOver":
		return stepClaim
	case "IdempotencyKeyGet":
		return stepRead
	case "IdempotencyKeyComplete", "IdempotencyKeyCompleteInBatch":
		return stepStore
	case "IdempotencyKeyRelease":
		return stepRelease
	case "MediaBuyInsert":
		return stepBuyInsert
	case "JobInsertFastMany", "JobInsertFastManyNoReturning":
		return stepOutbox
	case "JobSetStateIfRunningMany":
		return stepDelivered
	}
	return ""
}

// stepTracer is a pgx query and batch tracer that calls hook, in the
// goroutine of the request, before (start) and after (end) every statement
// stepOf recognises. It is how the tests stop a request at an exact step
// without any hook in the library: pgx calls the tracer synchronously around
// every Exec, Query and QueryRow, including the begin and commit of a
// transaction, and around every batch. For a batch (RunInTx sends BEGIN
// with the claim, and the answer with COMMIT, in one each), the start of
// every statement in it is reported before the batch is sent, in order, and
// the end of each as its result is read.
type stepTracer struct {
	hook func(ctx context.Context, conn *pgx.Conn, step string, start bool, args []any, err error)
}

type tracedStep struct{}

type stepCall struct {
	step string
	args []any
}

func (tr *stepTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	step := stepOf(data.SQL)
	if step == "" {
		return ctx
	}
	tr.hook(ctx, conn, step, true, data.Args, nil)
	return context.WithValue(ctx, tracedStep{}, stepCall{step, data.Args})
}

func (tr *stepTracer) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	if c, ok := ctx.Value(tracedStep{}).(stepCall); ok {
		tr.hook(ctx, conn, c.step, false, c.args, data.Err)
	}
}

func (tr *stepTracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	for _, q := range data.Batch.QueuedQueries {
		if step := stepOf(q.SQL); step != "" {
			tr.hook(ctx, conn, step, true, q.Arguments, nil)
		}
	}
	return ctx
}

func (tr *stepTracer) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	if step := stepOf(data.SQL); step != "" {
		tr.hook(ctx, conn, step, false, data.Args, data.Err)
	}
}

func (tr *stepTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// tracedPool opens a pool on url whose connections call hook at every
// recognised step.
func tracedPool(ctx context.Context, url string, maxConns int32, hook func(ctx context.Context, conn *pgx.Conn, step string, start bool, args []any, err error)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.Tracer = &stepTracer{hook: hook}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// argsContain reports whether one of a statement's arguments is s.
func argsContain(args []any, s string) bool {
	for _, a := range args {
		if v, ok := a.(string); ok && v == s {
			return true
		}
	}
	return false
}

// terminate kills the backend of conn from another session and waits until
// it is gone: the next statement on conn fails the way it does when an
// operator, a failover or an OOM kill ends the session.
func terminate(ctx context.Context, admin *pgxpool.Pool, conn *pgconn.PgConn) error {
	var ok bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1, 10000)`, conn.PID()).Scan(&ok); err != nil {
		return fmt.Errorf("pg_terminate_backend: %w", err)
	}
	if !ok {
		return fmt.Errorf("pg_terminate_backend(%d) found no such backend", conn.PID())
	}
	return nil
}
