package idem

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/db"
	"github.com/adcp-go/idempotency/idem/backend"
)

// This file holds the transaction of one RunInTx attempt, in its two forms:
//
//   - pipelined, when RunInTx can own a connection (conn is a
//     *pgxpool.Pool, a *pgxpool.Conn or a *pgx.Conn): BEGIN is sent in one
//     batch with the claim, and the answer in one batch with COMMIT, so that
//     a miss costs BEGIN·claim, the handler's statements, answer·COMMIT — the
//     round trips of a plain BEGIN, INSERT, COMMIT — and a replay two;
//   - plain, inside a caller's pgx.Tx (a savepoint) or on any other DB:
//     Begin, the claim, the handler's statements, the answer, Commit.
//
// Both hand the handler a real pgx.Tx (pgx's own, begun by the batch in the
// pipelined form), so nested Begin makes savepoints and the connection's
// TxStatus shows a handler that ended the transaction itself.

// txn is the transaction of one RunInTx attempt.
type txn struct {
	tx pgx.Tx
	// pipelined: the transaction was begun in the claim's batch on a
	// connection RunInTx owns, and commits in the answer's batch.
	pipelined bool
	// release gives a connection acquired from a pool back, once the
	// transaction has ended (nil when there is none to give back).
	release func()
	// ended is set once RunInTx has finished with the transaction: the
	// handler's view of it (handlerTx) refuses every statement from then on.
	ended atomic.Bool
}

// ownedConn returns the connection RunInTx can run a pipelined transaction
// on, acquiring one when conn is a pool, or nil when conn is something else
// (a pgx.Tx, or another implementation of DB).
func ownedConn(ctx context.Context, conn DB) (c *pgx.Conn, release func(), err error) {
	switch conn := conn.(type) {
	case *pgxpool.Pool:
		pc, err := conn.Acquire(ctx)
		if err != nil {
			return nil, nil, err
		}
		return pc.Conn(), pc.Release, nil
	case *pgxpool.Conn:
		return conn.Conn(), nil, nil
	case *pgx.Conn:
		return conn, nil, nil
	}
	return nil, nil, nil
}

// beginAndClaim begins the attempt's transaction on conn and claims the key
// in it. It returns the transaction and, when the key is held, the entry
// holding it; on an error the transaction is already over.
func (s *Store) beginAndClaim(ctx context.Context, conn DB, claim db.IdempotencyKeyClaimParams) (*txn, *backend.Entry, error) {
	c, release, err := ownedConn(ctx, conn)
	if err != nil {
		return nil, nil, dbError(ctx, "begin", err)
	}
	if c == nil {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return nil, nil, dbError(ctx, "begin", err)
		}
		t := &txn{tx: tx}
		held, err := claimRow(ctx, s.q, tx, claim, s.cfg.inFlightMax)
		if err != nil {
			t.rollback(ctx)
		}
		return t, held, err
	}

	// One round trip: BEGIN and the claim in one batch (pgx sends them in a
	// pipeline with one Sync). If the claim fails, Postgres skips the rest of
	// the pipeline and leaves the transaction aborted, to be rolled back.
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	sql, args := statement(func(r db.DBTX) { _, _ = s.q.IdempotencyKeyClaim(ctx, r, claim) })
	var row db.IdempotencyKeyClaimRow
	claimRan := false
	b.Queue(sql, args...).QueryRow(func(r pgx.Row) error {
		claimRan = true
		return r.Scan(&row.Claimed, &row.Operation, &row.RequestHash, &row.Response, &row.ExpiresAt, &row.DBNow)
	})
	br := c.SendBatch(ctx, b)
	t := &txn{tx: br.Tx(), pipelined: true, release: release}
	if err := br.Close(); err != nil {
		t.rollback(ctx) // nothing to send if BEGIN failed: the transaction is closed then
		if !claimRan {
			return nil, nil, dbError(ctx, "begin", err)
		}
		_, err = claimOutcome(ctx, row, err, s.cfg.inFlightMax)
		return nil, nil, err
	}
	held, err := claimOutcome(ctx, row, nil, s.cfg.inFlightMax)
	if err != nil {
		t.rollback(ctx)
	}
	return t, held, err
}

// commit stores the answer on the claimed row and commits: in one batch
// with COMMIT when pipelined, otherwise as two statements. On an error the
// caller rolls back.
func (s *Store) commit(ctx context.Context, t *txn, complete db.IdempotencyKeyCompleteInBatchParams) error {
	if !t.pipelined {
		if _, err := s.q.IdempotencyKeyCompleteInBatch(ctx, t.tx, complete); err != nil {
			return completeError(ctx, err)
		}
		if err := t.tx.Commit(ctx); err != nil {
			// The commit may or may not have happened; either way the key and
			// the business writes share its fate, so a retry replays or reruns.
			return dbError(ctx, "commit", err)
		}
		t.ended.Store(true)
		return nil
	}
	b := &pgx.Batch{}
	sql, args := statement(func(r db.DBTX) { _, _ = s.q.IdempotencyKeyCompleteInBatch(ctx, r, complete) })
	stored := false
	b.Queue(sql, args...).Exec(func(pgconn.CommandTag) error { stored = true; return nil })
	var tag pgconn.CommandTag
	b.Queue("commit").Exec(func(ct pgconn.CommandTag) error { tag = ct; return nil })
	err := t.tx.SendBatch(ctx, b).Close()
	switch {
	case err != nil && !stored:
		return completeError(ctx, err)
	case err != nil:
		// As above: the commit may or may not have happened.
		return dbError(ctx, "commit", err)
	case tag.String() != "COMMIT":
		// Postgres answers COMMIT with ROLLBACK when the transaction was
		// aborted; the answer's statement would have failed first, so this
		// is only a guard.
		return storageError("commit", fmt.Errorf("COMMIT answered %q: the transaction was rolled back", tag.String()))
	}
	// pgx's Tx still believes the transaction open (its COMMIT went in the
	// batch); the handler's view refuses it from now on, and the connection
	// is idle and given back.
	t.ended.Store(true)
	if t.release != nil {
		t.release()
		t.release = nil
	}
	return nil
}

// completeError maps a failed IdempotencyKeyCompleteInBatch.
func completeError(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "22012" {
		return errors.New("idem: the claimed row vanished inside its own transaction; everything was rolled back")
	}
	return dbError(ctx, "store response", err)
}

// rollback ends the transaction without committing (if it is still open)
// and gives an acquired connection back. A rollback with a cancelled
// context would only close the connection, so it gets its own. A failed
// rollback closes the connection (pgx does), which the pool then discards.
func (t *txn) rollback(ctx context.Context) {
	t.ended.Store(true)
	rollback(ctx, t.tx)
	if t.release != nil {
		t.release()
		t.release = nil
	}
}

// claimOutcome interprets the claim's row: nil once the key is claimed, or
// the entry holding it.
func claimOutcome(ctx context.Context, row db.IdempotencyKeyClaimRow, err error, bound time.Duration) (*backend.Entry, error) {
	switch {
	case err != nil:
		return nil, claimError(ctx, err, bound)
	case row.Claimed == nil:
		return nil, inFlightAfter(nil, bound) // the key changed hands on every attempt
	case *row.Claimed:
		return nil, nil
	}
	e := &backend.Entry{Operation: *row.Operation, Response: row.Response, ExpiresAt: *row.ExpiresAt, Now: *row.DBNow}
	copy(e.Hash[:], row.RequestHash)
	return e, nil
}

// recorder is a db.DBTX that sends nothing: it keeps the SQL and the
// arguments of the one statement that a generated query method sends, so
// that RunInTx can queue that statement in a pgx.Batch with BEGIN or COMMIT
// (sqlc generates no batch form that can share a batch with other
// statements).
type recorder struct {
	sql  string
	args []any
}

var errRecorded = errors.New("idem: statement recorded, not sent")

func (r *recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.sql, r.args = sql, args
	return pgconn.CommandTag{}, errRecorded
}

func (r *recorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return nil, errRecorded
}

func (r *recorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	r.sql, r.args = sql, args
	return errRow{errRecorded}
}

// statement returns the SQL and arguments that call sends through its
// db.DBTX.
func statement(call func(db.DBTX)) (string, []any) {
	var r recorder
	call(&r)
	return r.sql, r.args
}

// errRow is a pgx.Row whose Scan fails with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// handlerTx is the transaction a RunInTx handler gets: the real one, except
// that it cannot be committed or rolled back, which is RunInTx's to do, and
// that it refuses every statement once RunInTx has finished with it.
type handlerTx struct{ guardedTx }

// Commit refuses: RunInTx commits the claim, the handler's writes and the
// answer together after the handler returns.
func (t *handlerTx) Commit(context.Context) error {
	return newError(ErrTxEnded, "RunInTx commits the transaction after the handler returns; the handler must not commit it")
}

// Rollback refuses, so that a habitual deferred tx.Rollback in a handler is
// harmless: RunInTx rolls back when the handler returns an error.
func (t *handlerTx) Rollback(context.Context) error {
	return newError(ErrTxEnded, "RunInTx rolls the transaction back when the handler returns an error; the handler must not roll it back")
}

// guardedTx is a pgx.Tx that fails with pgx.ErrTxClosed once ended is set,
// as pgx's own transaction does once committed: RunInTx's pipelined COMMIT
// goes in a batch, which pgx's Tx does not see. Nested transactions
// (savepoints) it begins are guarded the same way. LargeObjects and Conn
// are pgx's own.
type guardedTx struct {
	pgx.Tx
	ended *atomic.Bool
}

// Begin starts a pseudo nested transaction (a savepoint), as pgx.Tx does.
func (t *guardedTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if t.ended.Load() {
		return nil, pgx.ErrTxClosed
	}
	sp, err := t.Tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &guardedTx{Tx: sp, ended: t.ended}, nil
}

// Commit commits a nested transaction (releases its savepoint).
func (t *guardedTx) Commit(ctx context.Context) error {
	if t.ended.Load() {
		return pgx.ErrTxClosed
	}
	return t.Tx.Commit(ctx)
}

// Rollback rolls a nested transaction back (to its savepoint).
func (t *guardedTx) Rollback(ctx context.Context) error {
	if t.ended.Load() {
		return pgx.ErrTxClosed
	}
	return t.Tx.Rollback(ctx)
}

// Exec runs a statement in the transaction.
func (t *guardedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.ended.Load() {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	return t.Tx.Exec(ctx, sql, args...)
}

// Query runs a query in the transaction.
func (t *guardedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.ended.Load() {
		return closedRows{}, pgx.ErrTxClosed
	}
	return t.Tx.Query(ctx, sql, args...)
}

// QueryRow runs a query that returns one row in the transaction.
func (t *guardedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.ended.Load() {
		return errRow{pgx.ErrTxClosed}
	}
	return t.Tx.QueryRow(ctx, sql, args...)
}

// SendBatch sends a batch in the transaction.
func (t *guardedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.ended.Load() {
		return pgx.FailedBatchResults(b, pgx.ErrTxClosed)
	}
	return t.Tx.SendBatch(ctx, b)
}

// CopyFrom copies rows into a table in the transaction.
func (t *guardedTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if t.ended.Load() {
		return 0, pgx.ErrTxClosed
	}
	return t.Tx.CopyFrom(ctx, table, columns, src)
}

// Prepare prepares a statement on the transaction's connection.
func (t *guardedTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if t.ended.Load() {
		return nil, pgx.ErrTxClosed
	}
	return t.Tx.Prepare(ctx, name, sql)
}

// closedRows are the pgx.Rows of a query on an ended transaction: no row,
// and pgx.ErrTxClosed.
type closedRows struct{}

func (closedRows) Close()                                       {}
func (closedRows) Err() error                                   { return pgx.ErrTxClosed }
func (closedRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (closedRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (closedRows) Next() bool                                   { return false }
func (closedRows) Scan(...any) error                            { return pgx.ErrTxClosed }
func (closedRows) Values() ([]any, error)                       { return nil, pgx.ErrTxClosed }
func (closedRows) RawValues() [][]byte                          { return nil }
func (closedRows) Conn() *pgx.Conn                              { return nil }
func (closedRows) TypeMap() *pgtype.Map                         { return nil }
