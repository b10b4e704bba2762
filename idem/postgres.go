package idem

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/adcp-go/idempotency/idem/backend"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/db"
)

// DB is what the Postgres code runs on: a *pgxpool.Pool, a *pgx.Conn or a
// pgx.Tx. Begin on a pool or a connection starts a transaction; on a pgx.Tx
// it starts a savepoint inside it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store is the Postgres store: with [RunInTx], the claim on a key, the
// handler's business writes and the stored response commit in one
// transaction, or not at all. It needs the table that package migrations
// creates. A Store holds no connection and is safe for concurrent use.
type Store struct {
	cfg   settings
	q     *db.Queries
	turns turns
}

// NewStore returns a Postgres store configured by cfg (nil for the
// defaults). It fails if the configuration is invalid, for example a TTL
// outside AdCP's bounds.
func NewStore(cfg *Config) (*Store, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	return &Store{cfg: s, q: db.New()}, nil
}

// Capability returns the adcp.idempotency fragment for
// get_adcp_capabilities.
func (s *Store) Capability() Capability { return s.cfg.capability() }

// RunInTx runs fn at most once per (req.Principal, req.Key), in a
// transaction on conn, and answers retries with the stored result.
//
// It validates req (principal, key, operation, payload) before touching the
// database, then begins a transaction on conn (a savepoint when conn is a pgx.Tx)
// and claims the key with INSERT ... ON CONFLICT DO NOTHING. A concurrent
// request with the same key blocks on that insert until the first
// transaction ends, for at most Config.WaitLimit (a transaction-local
// lock_timeout), which is what serialises retries; requests with the same
// key in this process wait for each other in memory first, so duplicates
// never hold more than one connection. Then, as AdCP requires:
//
//   - a new key: fn runs with the same transaction, the JSON encoding of its
//     value is stored on the claimed row, and everything commits together;
//   - the same key and an equal payload (see [CanonicalJSONSHA256]) within
//     the TTL: the stored value, with Replayed set, and fn does not run;
//   - the same key with another payload or operation: [ErrConflict];
//   - a key past its TTL but still remembered: [ErrExpired];
//   - a concurrent request that holds the key past WaitLimit, or at once
//     under [RejectInFlight]: [ErrInFlight];
//   - a principal over its insert rate: [ErrRateLimited].
//
// If fn returns an error or panics, or its value cannot be encoded, the
// transaction (or savepoint) is rolled back: the claim and every business
// write disappear, nothing is cached, a retry runs fn again. fn's error is
// returned as it is; a panic is re-raised after the rollback. fn must do
// all its writes through tx, and must leave the transaction to RunInTx:
// tx.Commit and tx.Rollback are refused with [ErrTxEnded], and a handler
// that ends the transaction anyway (tx.Exec(ctx, "COMMIT")) gets
// [ErrTxEnded], with the key kept so that no retry runs it again.
//
// Transactions run at READ COMMITTED, Postgres's default, give the
// outcomes above directly. At REPEATABLE READ or SERIALIZABLE (the
// session's default_transaction_isolation), a duplicate that waited for the
// first request cannot see its committed row from its old snapshot;
// RunInTx then claims again in a fresh transaction, so the outcomes are the
// same. In a caller's transaction at those levels it cannot take a fresh
// snapshot and returns [ErrTxConflict]: retry the caller's transaction.
// A serialization failure or deadlock while storing the answer or
// committing is [ErrTxConflict] as well; nothing was stored.
//
// When conn is a pgx.Tx, the outcome is the caller's to commit: the savepoint
// is released on success, and a later rollback of the caller's transaction
// removes the stored answer together with the business writes.
//
// When conn is a *pgxpool.Pool, a *pgxpool.Conn or a *pgx.Conn, RunInTx
// owns the transaction and pipelines it: BEGIN goes in one batch with the
// claim, and the answer in one batch with COMMIT, so a new key costs three
// round trips (BEGIN and claim, the handler's statements, answer and
// COMMIT) and a replay two; fn still gets a pgx transaction (nested Begin
// makes savepoints), which refuses every statement with pgx.ErrTxClosed
// once RunInTx has returned. With [Config.ReplayPreRead] a completed key
// is answered from one read outside any transaction.
func RunInTx[T any](ctx context.Context, s *Store, conn DB, req Request, fn func(ctx context.Context, tx pgx.Tx) (T, error)) (res Result[T], err error) {
	ctx, obs := s.cfg.begin(ctx, req.Operation)
	defer obs.end(ctx, &res.Replayed, &err)
	p, err := prepare(req, s.cfg.maxPayload)
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("idem: %w", err)
	}
	if s.cfg.preRead {
		if res, answered, err := preRead[T](ctx, s, conn, p); answered {
			return res, err
		}
	}
	deadline := time.Now().Add(s.cfg.wait)
	reject := s.cfg.duplicates == RejectInFlight
	leave, waited, err := s.turns.take(ctx, p.ref(), s.cfg.wait, s.cfg.inFlightMax, reject)
	obs.waited = waited
	if err != nil {
		return res, err
	}
	defer leave()
	_, callerTx := conn.(pgx.Tx)
	for attempt := 1; ; attempt++ {
		wait := time.Duration(0) // at once, but see minLockWait
		if !reject {
			wait = time.Until(deadline)
		}
		res, err = runInTx(ctx, s, conn, callerTx, p, wait, fn)
		if !errors.Is(err, errStaleSnapshot) {
			return res, err
		}
		if !callerTx && attempt < 3 {
			continue // a fresh transaction has a fresh snapshot
		}
		return res, staleSnapshotError(ctx, conn, err)
	}
}

// preRead answers a request whose key is completed and within its replay
// window from one read outside any transaction (Config.ReplayPreRead): the
// stored answer, ErrConflict for another payload, or the answer the key's
// marker stands for. answered is false when the claim must decide: no row, a row
// in flight, expired or reusable, a failed read, or conn a transaction.
//
// Why it is safe: the read is a statement of its own, so it sees only rows
// committed before it began, and RunInTx stores an answer only in the
// transaction that commits the handler's writes (PostgresBackend stores it
// once the work is done); so a completed row means the answer it holds was
// committed with its work. Such a row does not change until its tombstone
// has outlived TombstoneRetention (no claim takes it over, and Sweep does
// not delete it, before then), and its replay window ends earlier (ClockSkew
// <= TombstoneRetention); so a claim made at the instant of the read would
// have found the same row and given the same answer: the same replay, or
// the same ErrConflict.
func preRead[T any](ctx context.Context, s *Store, conn DB, p prepared) (res Result[T], answered bool, err error) {
	switch c := conn.(type) {
	case pgx.Tx:
		return res, false, nil
	case *pgx.Conn:
		if c.PgConn().TxStatus() != 'I' {
			return res, false, nil // the caller began a transaction on it
		}
	case *pgxpool.Conn:
		if c.Conn().PgConn().TxStatus() != 'I' {
			return res, false, nil
		}
	}
	e, err := getRow(ctx, s.q, conn, clock(s.cfg.now), p.ref())
	if err != nil || e == nil || e.Response == nil || s.cfg.classify(e) != stateCompleted {
		return res, false, nil
	}
	res, err = replayOrReject[T](s.cfg, p, e)
	return res, true, err
}

// errStaleSnapshot marks a claim that failed because the transaction's
// snapshot predates the commit of the key's holder (SQLSTATE 40001 at
// REPEATABLE READ or SERIALIZABLE).
var errStaleSnapshot = errors.New("the transaction's snapshot cannot see the key's holder")

// runInTx is one attempt of RunInTx, in one transaction.
func runInTx[T any](ctx context.Context, s *Store, conn DB, callerTx bool, p prepared, wait time.Duration, fn func(ctx context.Context, tx pgx.Tx) (T, error)) (res Result[T], err error) {
	// One round trip where RunInTx owns the connection: begin and claim the
	// key or read the row that holds it. The claimed row gets its final
	// expiry now, so that storing the answer later changes no indexed
	// column.
	// A transaction of our own may not sit idle holding the claim past the
	// in-flight bound: Postgres ends it, and the claim with it, if this
	// process hangs. (A caller's transaction keeps its own settings.)
	idle := ""
	if !callerTx {
		idle = lockTimeout(s.cfg.inFlightMax)
	}
	owner := newOwnerToken()
	t, held, err := s.beginAndClaim(ctx, conn, claimParams(s.cfg.now, wait, idle, s.cfg.ttl, backend.Claim{
		Ref: p.ref(), Operation: p.Operation, Hash: p.hash, Owner: owner, Retention: s.cfg.retention,
	}))
	if err != nil {
		return res, err // the transaction is over
	}
	done := false
	defer func() {
		if !done {
			// Runs on errors and panics alike; it also puts the caller's
			// settings back when conn is the caller's transaction.
			t.rollback(ctx)
		}
	}()
	if held != nil {
		// Nothing was written.
		return replayOrReject[T](s.cfg, p, held)
	}
	if err := allowNewKey(ctx, s.cfg.limiter, p); err != nil {
		return res, err
	}
	// The claim holds the key until the commit; it may not outlive the
	// in-flight bound. Past it, the handler's context ends (cause
	// ErrHandlerTimeout), the transaction rolls back and the key is free.
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.inFlightMax, ErrHandlerTimeout)
	defer cancel()

	v, err := runHandler(ctx, t, fn, func() {
		// The handler panicked after ending the transaction itself: mark
		// the key before the panic goes on, or it would stay in flight.
		done = true
		_ = s.txEnded(ctx, conn, t, p, owner, nil)
	})
	switch status := t.tx.Conn().PgConn().TxStatus(); {
	case status == 'I':
		// The handler ended the transaction itself (tx.Exec(ctx, "COMMIT")):
		// the claim and whatever it wrote may have committed without an
		// answer.
		done = true
		return res, s.txEnded(ctx, conn, t, p, owner, err)
	case err != nil && errors.Is(err, ErrUnencodable):
		e := newError(ErrUnencodable, "the seller could not encode the answer; nothing was stored and everything was rolled back")
		e.cause = err
		return res, e
	case err != nil:
		return res, err
	case status == 'E':
		return res, errors.New("idem: the handler returned success, but a statement in its transaction failed and the transaction is aborted; everything was rolled back")
	}
	body, err := encodeValue(v)
	if err != nil {
		e := newError(ErrUnencodable, "the seller could not encode the answer; nothing was stored and everything was rolled back")
		e.cause = errors.Unwrap(err)
		return res, e
	}
	stored, err := s.cfg.seal(p, body)
	if err != nil {
		return res, err
	}
	// One round trip where RunInTx owns the connection: the answer and
	// COMMIT. The answer leaves expires_at as the claim set it, so the
	// update can be HOT.
	if err := s.commit(ctx, t, db.IdempotencyKeyCompleteInBatchParams{
		Response: stored, PrincipalID: p.Principal, AccountID: p.Account, Key: p.Key, OwnerToken: owner,
	}); err != nil {
		return res, err
	}
	done = true
	return Result[T]{Value: v, Response: body}, nil
}

// runHandler calls fn with the handler's view of t. If fn panics after
// ending the transaction itself, ended runs before the panic goes on.
func runHandler[T any](ctx context.Context, t *txn, fn func(context.Context, pgx.Tx) (T, error), ended func()) (T, error) {
	panicked := true
	defer func() {
		if panicked && t.tx.Conn().PgConn().TxStatus() == 'I' {
			ended()
		}
	}()
	v, err := fn(ctx, &handlerTx{guardedTx{Tx: t.tx, ended: &t.ended}})
	panicked = false
	return v, err
}

func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_ = tx.Rollback(rctx)
	cancel()
}

// txEnded handles a handler that ended its transaction. If the claim
// committed, the key is marked as run without an answer, so that a retry
// gets ErrTxEnded instead of IN_FLIGHT or a second run; if it was rolled
// back, the key is free and a retry runs again.
func (s *Store) txEnded(ctx context.Context, conn DB, t *txn, p prepared, owner string, fnErr error) error {
	t.rollback(ctx) // returns the connection; the server has no transaction to end
	e := newError(ErrTxEnded, "the seller's handler ended its transaction itself, so the request's writes and its answer did not commit together; it will not run again under this key")
	e.cause = fnErr
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	marker, err := s.cfg.seal(p, markerTxEnded)
	if err != nil {
		e.cause = fmt.Errorf("%w; sealing the key's marker failed too: %w", fnErr, err)
		return e
	}
	err = pgx.BeginFunc(mctx, conn, func(mtx pgx.Tx) error {
		_, err := s.q.IdempotencyKeyComplete(mctx, mtx, db.IdempotencyKeyCompleteParams{
			Response: marker, PrincipalID: p.Principal, AccountID: p.Account, Key: p.Key, OwnerToken: owner, Now: clock(s.cfg.now),
		})
		return err
	})
	if err != nil {
		e.cause = fmt.Errorf("%w; marking the key failed too, so it stays in flight until its claim expires: %w", fnErr, err)
	}
	return e
}

// staleSnapshotError explains a claim that a transaction at REPEATABLE READ
// or SERIALIZABLE could not make, naming the level.
func staleSnapshotError(ctx context.Context, conn DB, err error) error {
	level := "REPEATABLE READ or SERIALIZABLE"
	var l string
	if conn.QueryRow(ctx, "SHOW transaction_isolation").Scan(&l) == nil {
		level = l
	}
	e := newError(ErrTxConflict, "a concurrent request with this idempotency_key committed after the transaction began; retry")
	e.cause = fmt.Errorf("the caller's transaction runs at %s, whose snapshot cannot see that request's answer; retry the caller's transaction: %w", level, err)
	return e
}

// claimRow claims a key in the table on tx with the arguments claimParams
// made: a new row, or a takeover of a reusable one, waiting at most their
// lock timeout for a concurrent uncommitted claim. It returns nil once the
// key is claimed, or the entry holding it; bound is the in-flight bound an
// IN_FLIGHT error reports.
func claimRow(ctx context.Context, q *db.Queries, tx db.DBTX, claim db.IdempotencyKeyClaimParams, bound time.Duration) (*backend.Entry, error) {
	row, err := q.IdempotencyKeyClaim(ctx, tx, claim)
	return claimOutcome(ctx, row, err, bound)
}

// claimParams are the arguments of IdempotencyKeyClaim for c: wait bounds
// the wait for a concurrent claim, idle bounds the claiming transaction's
// idle_in_transaction_session_timeout ("" leaves it), and the row expires
// after expires (the lease, or for RunInTx the TTL).
func claimParams(now func() time.Time, wait time.Duration, idle string, expires time.Duration, c backend.Claim) db.IdempotencyKeyClaimParams {
	return db.IdempotencyKeyClaimParams{
		PrincipalID: c.Principal, AccountID: c.Account, Key: c.Key, Operation: c.Operation, RequestHash: c.Hash[:],
		OwnerToken: c.Owner, ExpiresMs: expires.Milliseconds(), RetentionMs: c.Retention.Milliseconds(),
		LockTimeout: lockTimeout(wait), IdleTimeout: idle, Now: clock(now),
	}
}

// minLockWait is the shortest lock_timeout a claim runs with. lock_timeout
// bounds every lock wait of the claim's INSERT, not only the wait for the
// key's holder: an INSERT also waits, briefly, for the relation extension
// lock when many sessions insert at once. A bound of a millisecond or two
// would then answer IN_FLIGHT for keys that nobody holds (the storm tests
// saw every request for a key get IN_FLIGHT, none executing it).
const minLockWait = 100 * time.Millisecond

// lockTimeout is the claim's lock_timeout for a wait, in whole
// milliseconds, never below minLockWait (and never zero, which would mean
// no limit at all).
func lockTimeout(wait time.Duration) string {
	return strconv.FormatInt(max(wait, minLockWait).Milliseconds(), 10) + "ms"
}

// claimError maps a failed claim: the waits that ended mean the key is in
// flight; a stale snapshot is retried by RunInTx.
func claimError(ctx context.Context, err error, bound time.Duration) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "55P03", // lock_not_available: lock_timeout (WaitLimit) elapsed
			pgErr.Code == "57014" && ctx.Err() == nil: // a statement_timeout shorter than WaitLimit
			e := inFlightAfter(nil, bound)
			e.cause = fmt.Errorf("claim: %w", err)
			return e
		case pgErr.Code == "40001":
			return fmt.Errorf("%w: %w", errStaleSnapshot, err)
		}
	}
	return dbError(ctx, "claim", err)
}

func getRow(ctx context.Context, q *db.Queries, tx db.DBTX, at *time.Time, ref backend.Ref) (*backend.Entry, error) {
	row, err := q.IdempotencyKeyGet(ctx, tx, db.IdempotencyKeyGetParams{Now: at, PrincipalID: ref.Principal, AccountID: ref.Account, Key: ref.Key})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, dbError(ctx, "read", err)
	}
	e := &backend.Entry{Operation: row.Operation, Response: row.Response, ExpiresAt: row.ExpiresAt, Now: row.DBNow}
	copy(e.Hash[:], row.RequestHash)
	return e, nil
}

// Sweep deletes, in batches of Config.SweepBatch rows, every row whose
// tombstone has outlived Config.TombstoneRetention, and returns how many it
// deleted. Each batch is its own statement, so a long sweep holds no long
// transaction; rows that a running request has locked are skipped. Run it
// periodically (every few minutes) on one replica or on all: concurrent
// sweeps skip each other's rows.
func (s *Store) Sweep(ctx context.Context, conn DB) (int, error) {
	total := 0
	for {
		n, err := sweepBatch(ctx, s.q, conn, clock(s.cfg.now), s.cfg.retention, s.cfg.sweepBatch)
		total += n
		s.cfg.swept(ctx, n)
		if err != nil || n < s.cfg.sweepBatch {
			return total, err
		}
	}
}

func sweepBatch(ctx context.Context, q *db.Queries, tx db.DBTX, at *time.Time, retention time.Duration, limit int) (int, error) {
	n, err := q.IdempotencyKeyDeleteExpired(ctx, tx, db.IdempotencyKeyDeleteExpiredParams{
		Now: at, RetentionMs: retention.Milliseconds(), MaxRows: int32(min(limit, maxSweepBatch)),
	})
	if err != nil {
		return 0, dbError(ctx, "sweep", err)
	}
	return int(n), nil
}

// PostgresBackend is a [backend.Backend] on the same table as [Store], for handlers
// that do not write through a pgx.Tx (calls to other services, another
// database). Claims are committed rows with a lease, so the business work
// and the stored answer are not atomic here; prefer [RunInTx] when the work
// is in this database.
type PostgresBackend struct {
	// DB runs the statements, each in its own implicit transaction: a
	// *pgxpool.Pool (or *pgx.Conn). Required.
	DB DB

	q db.Queries
}

// Claim implements [backend.Backend]. It waits at most c.Wait for a conflicting
// uncommitted claim (one that RunInTx holds on the same key).
func (b *PostgresBackend) Claim(ctx context.Context, c backend.Claim) (*backend.Entry, error) {
	for attempt := 1; ; attempt++ {
		e, err := claimRow(ctx, &b.q, b.DB, claimParams(atFunc(c.At), c.Wait, "", c.Lease, c), c.Lease)
		if errors.Is(err, errStaleSnapshot) && attempt < 3 {
			// At REPEATABLE READ each statement on a pool is a transaction
			// of its own: the next one sees the holder.
			continue
		}
		if errors.Is(err, errStaleSnapshot) {
			return nil, newError(ErrTxConflict, "")
		}
		return e, err
	}
}

// Renew implements [backend.Backend].
func (b *PostgresBackend) Renew(ctx context.Context, r backend.Renewal) error {
	n, err := b.q.IdempotencyKeyRenew(ctx, b.DB, db.IdempotencyKeyRenewParams{
		LeaseMs: r.Lease.Milliseconds(), PrincipalID: r.Principal, AccountID: r.Account, Key: r.Key, OwnerToken: r.Owner, Now: atPtr(r.At),
	})
	if err != nil {
		return dbError(ctx, "renew", err)
	}
	if n == 0 {
		return backend.ErrNotOwner
	}
	return nil
}

// Complete implements [backend.Backend].
// The row keeps no retention of its own: Sweep and backend.Claim are told it.
func (b *PostgresBackend) Complete(ctx context.Context, c backend.Completion) error {
	response := c.Response
	if response == nil {
		response = []byte("null")
	}
	ttl := c.TTL.Milliseconds()
	n, err := b.q.IdempotencyKeyComplete(ctx, b.DB, db.IdempotencyKeyCompleteParams{
		Response: response, TTLMs: &ttl, PrincipalID: c.Principal, AccountID: c.Account, Key: c.Key,
		OwnerToken: c.Owner, Now: atPtr(c.At),
	})
	if err != nil {
		return dbError(ctx, "complete", err)
	}
	if n == 0 {
		return backend.ErrNotOwner
	}
	return nil
}

// Release implements [backend.Backend].
func (b *PostgresBackend) Release(ctx context.Context, ref backend.Ref, owner string) error {
	n, err := b.q.IdempotencyKeyRelease(ctx, b.DB, db.IdempotencyKeyReleaseParams{PrincipalID: ref.Principal, AccountID: ref.Account, Key: ref.Key, OwnerToken: owner})
	if err != nil {
		return dbError(ctx, "release", err)
	}
	if n == 0 {
		return backend.ErrNotOwner
	}
	return nil
}

// Get implements [backend.Backend].
func (b *PostgresBackend) Get(ctx context.Context, ref backend.Ref, at time.Time) (*backend.Entry, error) {
	return getRow(ctx, &b.q, b.DB, atPtr(at), ref)
}

// Sweep implements [backend.Backend].
func (b *PostgresBackend) Sweep(ctx context.Context, s backend.SweepRequest) (int, error) {
	return sweepBatch(ctx, &b.q, b.DB, atPtr(s.At), s.Retention, s.Limit)
}

// clock returns the instant to pass as a query's "now": nil, meaning the
// database clock, unless a test clock is set.
func clock(now func() time.Time) *time.Time {
	if now == nil {
		return nil
	}
	t := now()
	return &t
}

// atPtr is clock for an instant given to a Backend: zero means the
// database clock.
func atPtr(at time.Time) *time.Time {
	if at.IsZero() {
		return nil
	}
	return &at
}

// atFunc turns an instant given to a backend.Backend into a clock.
func atFunc(at time.Time) func() time.Time {
	if at.IsZero() {
		return nil
	}
	return func() time.Time { return at }
}

// dbError maps a driver error to this package's vocabulary, in one place:
// a serialization failure or a deadlock is ErrTxConflict (nothing was
// stored, the request may be retried); cancellation stays the context's
// error; anything else is a storage failure.
func dbError(ctx context.Context, op string, err error) error {
	// ctx's own end is the caller's, and kept as it is; a network timeout
	// matches context.DeadlineExceeded too, but it is the database's
	// failure.
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("idem: %s: %w", op, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01") {
		e := newError(ErrTxConflict, "the database aborted the transaction because of a concurrent one (serialization failure or deadlock); nothing was stored, retry the request")
		e.cause = fmt.Errorf("%s: %w", op, err)
		return e
	}
	return storageError(op, err)
}
