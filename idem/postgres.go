package idem

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/adcp-go/idempotency/db"
)

// DBTX is what the Postgres code runs statements on: a *pgxpool.Pool, a
// *pgx.Conn or a pgx.Tx.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Beginner starts a transaction: a *pgxpool.Pool or *pgx.Conn starts a real
// one, a pgx.Tx a savepoint inside itself.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Store is the Postgres store: with [RunInTx], the claim on a key, the
// handler's business writes and the stored response commit in one
// transaction, or not at all. It needs the table that package migrations
// creates. A Store holds no connection and is safe for concurrent use.
type Store struct {
	cfg         settings
	q           *db.Queries
	lockTimeout string
}

// NewStore returns a Postgres store configured by cfg (nil for the
// defaults). It fails if the configuration is invalid, for example a TTL
// outside AdCP's bounds.
func NewStore(cfg *Config) (*Store, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	return &Store{cfg: s, q: db.New(), lockTimeout: fmt.Sprintf("%dms", s.wait.Milliseconds())}, nil
}

// Capability returns the adcp.idempotency fragment for
// get_adcp_capabilities.
func (s *Store) Capability() Capability { return s.cfg.capability() }

// Result is the outcome of an idempotent call.
type Result[T any] struct {
	// Value is the handler's value, or on a replay the stored one decoded.
	Value T
	// Replayed reports that the value is the stored answer of an earlier
	// request with the same key, and that the handler did not run.
	Replayed bool
	// Response is the stored JSON encoding of Value: on a replay, byte for
	// byte what the first request stored. It may share memory with the
	// backend: do not modify it.
	Response json.RawMessage
}

// RunInTx runs fn at most once per (req.Principal, req.Key), in a
// transaction on conn, and answers retries with the stored result.
//
// It validates req (principal, key, operation, payload) before touching the
// database, then begins a transaction on conn (a savepoint when conn is a pgx.Tx)
// and claims the key with INSERT ... ON CONFLICT DO NOTHING. A concurrent
// request with the same key blocks on that insert until the first
// transaction ends, for at most Config.WaitLimit (a transaction-local
// lock_timeout), which is what serialises retries. Then, as AdCP requires:
//
//   - a new key: fn runs with the same transaction, the JSON encoding of its
//     value is stored on the claimed row, and everything commits together;
//   - the same key and an equal payload (see [CanonicalJSONSHA256]) within
//     the TTL: the stored value, with Replayed set, and fn does not run;
//   - the same key with another payload or operation: [ErrConflict];
//   - a key past its TTL but still remembered: [ErrExpired];
//   - a concurrent request that holds the key past WaitLimit: [ErrInFlight];
//   - a principal over its insert rate: [ErrRateLimited].
//
// If fn returns an error or panics, the transaction (or savepoint) is rolled
// back: the claim and every business write disappear, nothing is cached, a
// retry runs fn again. fn's error is returned as it is; a panic is re-raised
// after the rollback. fn must do all its writes through tx: a write on
// another connection is not covered.
//
// When conn is a pgx.Tx, the outcome is the caller's to commit: the savepoint
// is released on success, and a later rollback of the caller's transaction
// removes the stored answer together with the business writes.
func RunInTx[T any](ctx context.Context, s *Store, conn Beginner, req Request, fn func(ctx context.Context, tx pgx.Tx) (T, error)) (res Result[T], err error) {
	defer s.cfg.observeCall(ctx, req.Operation, time.Now(), &res.Replayed, &err)
	p, err := prepare(req, s.cfg.maxPayload)
	if err != nil {
		return res, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return res, dbError("begin", err)
	}
	done := false
	defer func() {
		if !done {
			// Runs on errors and panics alike. A rollback with a cancelled
			// context would only close the connection, so give it its own.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = tx.Rollback(rctx)
			cancel()
		}
	}()

	// One round trip: set a transaction-local lock_timeout, claim the key,
	// put lock_timeout back; or read the row that holds the key. The claimed
	// row gets its final expiry now, so that storing the answer later changes
	// no indexed column.
	owner := newOwnerToken()
	held, err := claimRow(ctx, s.q, tx, s.cfg.now, s.lockTimeout, s.cfg.ttl, Claim{
		Ref: Ref{p.Principal, p.Key}, Operation: p.Operation, Hash: p.hash,
		Owner: owner, Retention: s.cfg.retention,
	})
	if err != nil {
		return res, err
	}
	if held != nil {
		// Nothing was written; the deferred rollback also puts lock_timeout
		// back when conn is the caller's transaction.
		return replayOrReject[T](s.cfg, p, held)
	}
	if err := allowNewKey(ctx, s.cfg.limiter, p.Principal); err != nil {
		return res, err
	}

	v, err := fn(ctx, tx)
	if err != nil {
		return res, err
	}
	body, err := encodeValue(v)
	if err != nil {
		return res, err
	}
	n, err := s.q.IdempotencyKeyComplete(ctx, tx, db.IdempotencyKeyCompleteParams{
		Response:    body, // TtlMs nil: expires_at stays, the update can be HOT
		PrincipalID: p.Principal, Key: p.Key, OwnerToken: owner, Now: clock(s.cfg.now),
	})
	if err != nil {
		return res, dbError("store response", err)
	}
	if n != 1 {
		return res, fmt.Errorf("idem: the claimed row vanished inside its own transaction")
	}
	if err := tx.Commit(ctx); err != nil {
		// The commit may or may not have happened; either way the key and
		// the business writes share its fate, so a retry replays or reruns.
		return res, dbError("commit", err)
	}
	done = true
	return Result[T]{Value: v, Response: body}, nil
}

// replayOrReject answers a request whose key is held by entry e.
func replayOrReject[T any](cfg settings, p prepared, e *Entry) (Result[T], error) {
	var res Result[T]
	st := cfg.classify(e)
	if st == stateExpired {
		// Past the window the stored request no longer counts: whatever the
		// payload, the answer is that the key expired.
		return res, newError(ErrExpired, fmt.Sprintf("idempotency_key is past the replay window (%ds); if the original request may have succeeded, look the resource up before retrying with a fresh key", int(cfg.ttl/time.Second)))
	}
	if e.Operation != p.Operation || e.Hash != p.hash {
		// Checked before waiting: a duplicate with a different payload never
		// waits, and never learns more than this.
		return res, newError(ErrConflict, "idempotency_key was already used with a different request; use a fresh key, or resend the original request to get its answer")
	}
	if st != stateCompleted {
		return res, inFlight(e)
	}
	v, err := decodeValue[T](e.Response)
	if err != nil {
		return res, err
	}
	res.Value = v
	res.Replayed, res.Response = true, e.Response
	return res, nil
}

func inFlight(e *Entry) *Error {
	err := newError(ErrInFlight, "a request with this idempotency_key is still being processed; retry shortly")
	err.RetryAfter = time.Second
	if e != nil && e.Response == nil {
		err.RetryAfter = min(max(e.ExpiresAt.Sub(e.Now), time.Second), 5*time.Second)
	}
	return err
}

func allowNewKey(ctx context.Context, l Limiter, principal string) error {
	ok, after, err := l.Allow(ctx, principal)
	if err != nil {
		return fmt.Errorf("idem: rate limiter: %w", err)
	}
	if !ok {
		e := newError(ErrRateLimited, "too many new idempotency keys from this caller; retry later")
		e.RetryAfter = after
		return e
	}
	return nil
}

// claimRow claims c in the table: an insert for a new key that expires
// after expires (the lease, or for RunInTx the TTL), a takeover for a
// reusable row. It returns nil once the key is claimed, or the entry holding
// it. Rows can vanish or change between statements (released, swept, taken
// over, or committed by a concurrent claim after this statement's snapshot),
// so it tries a few times; each statement is atomic on its own.
func claimRow(ctx context.Context, q *db.Queries, tx DBTX, now func() time.Time, lockTimeout string, expires time.Duration, c Claim) (*Entry, error) {
	for range 4 {
		at := clock(now)
		row, err := q.IdempotencyKeyClaim(ctx, tx, db.IdempotencyKeyClaimParams{
			PrincipalID: c.Principal, Key: c.Key, Operation: c.Operation, RequestHash: c.Hash[:],
			OwnerToken: c.Owner, ExpiresMs: expires.Milliseconds(), LockTimeout: lockTimeout, Now: at,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			continue // the holder committed after this statement's snapshot
		}
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "57014" && ctx.Err() == nil {
				// A statement_timeout shorter than WaitLimit ended the wait
				// for a concurrent request: the key is in flight all the same.
				e := inFlight(nil)
				e.cause = fmt.Errorf("claim: %w", err)
				return nil, e
			}
			return nil, dbError("claim", err)
		}
		if row.Claimed {
			return nil, nil
		}
		e := &Entry{Operation: row.Operation, Response: row.Response, ExpiresAt: row.ExpiresAt, Now: row.DbNow}
		copy(e.Hash[:], row.RequestHash)
		if !Reusable(e.Response == nil, e.ExpiresAt, e.Now, c.Retention) {
			return e, nil
		}
		_, err = q.IdempotencyKeyTakeOver(ctx, tx, db.IdempotencyKeyTakeOverParams{
			Operation: c.Operation, RequestHash: c.Hash[:], OwnerToken: c.Owner,
			ExpiresMs: expires.Milliseconds(), PrincipalID: c.Principal, Key: c.Key,
			RetentionMs: c.Retention.Milliseconds(), Now: at,
		})
		if err == nil {
			return nil, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return nil, dbError("take over", err)
		}
		// Another request took it over first; look again.
	}
	return nil, inFlight(nil)
}

func getRow(ctx context.Context, q *db.Queries, tx DBTX, at *time.Time, ref Ref) (*Entry, error) {
	row, err := q.IdempotencyKeyGet(ctx, tx, db.IdempotencyKeyGetParams{Now: at, PrincipalID: ref.Principal, Key: ref.Key})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, dbError("read", err)
	}
	e := &Entry{Operation: row.Operation, Response: row.Response, ExpiresAt: row.ExpiresAt, Now: row.DbNow}
	copy(e.Hash[:], row.RequestHash)
	return e, nil
}

// Sweep deletes, in batches of Config.SweepBatch rows, every row whose
// tombstone has outlived Config.TombstoneRetention, and returns how many it
// deleted. Each batch is its own statement, so a long sweep holds no long
// transaction; rows that a running request has locked are skipped. Run it
// periodically (every few minutes) on one replica or on all: concurrent
// sweeps skip each other's rows.
func (s *Store) Sweep(ctx context.Context, conn DBTX) (int64, error) {
	var total int64
	for {
		n, err := sweepBatch(ctx, s.q, conn, s.cfg.now, s.cfg.retention, s.cfg.sweepBatch)
		total += n
		if err != nil || n < int64(s.cfg.sweepBatch) {
			return total, err
		}
	}
}

func sweepBatch(ctx context.Context, q *db.Queries, tx DBTX, now func() time.Time, retention time.Duration, limit int) (int64, error) {
	n, err := q.IdempotencyKeyDeleteExpired(ctx, tx, db.IdempotencyKeyDeleteExpiredParams{
		Now: clock(now), RetentionMs: retention.Milliseconds(), MaxRows: int32(min(limit, 1<<30)),
	})
	if err != nil {
		return 0, dbError("sweep", err)
	}
	return n, nil
}

// PostgresBackend is a [Backend] on the same table as [Store], for handlers
// that do not write through a pgx.Tx (calls to other services, another
// database). Claims are committed rows with a lease, so the business work
// and the stored answer are not atomic here; prefer [RunInTx] when the work
// is in this database.
type PostgresBackend struct {
	// DB runs the statements, each in its own implicit transaction: a
	// *pgxpool.Pool (or *pgx.Conn). Required.
	DB DBTX
	// Now replaces the database clock, for tests. Leave nil in production.
	Now func() time.Time

	q db.Queries
}

// Claim implements [Backend].
// Its claim statement waits at most 5 seconds for a conflicting
// uncommitted claim (one made by RunInTx on the same key).
func (b *PostgresBackend) Claim(ctx context.Context, c Claim) (*Entry, error) {
	return claimRow(ctx, &b.q, b.DB, b.Now, "5s", c.Lease, c)
}

// Complete implements [Backend].
// The row keeps no retention of its own: Sweep and Claim are told it.
func (b *PostgresBackend) Complete(ctx context.Context, c Completion) error {
	response := c.Response
	if response == nil {
		response = []byte("null")
	}
	ttl := c.TTL.Milliseconds()
	n, err := b.q.IdempotencyKeyComplete(ctx, b.DB, db.IdempotencyKeyCompleteParams{
		Response: response, TtlMs: &ttl, PrincipalID: c.Principal, Key: c.Key,
		OwnerToken: c.Owner, Now: clock(b.Now),
	})
	if err != nil {
		return dbError("complete", err)
	}
	if n == 0 {
		return ErrNotOwner
	}
	return nil
}

// Release implements [Backend].
func (b *PostgresBackend) Release(ctx context.Context, ref Ref, owner string) error {
	n, err := b.q.IdempotencyKeyRelease(ctx, b.DB, db.IdempotencyKeyReleaseParams{PrincipalID: ref.Principal, Key: ref.Key, OwnerToken: owner})
	if err != nil {
		return dbError("release", err)
	}
	if n == 0 {
		return ErrNotOwner
	}
	return nil
}

// Get implements [Backend].
func (b *PostgresBackend) Get(ctx context.Context, ref Ref) (*Entry, error) {
	return getRow(ctx, &b.q, b.DB, clock(b.Now), ref)
}

// Sweep implements [Backend].
func (b *PostgresBackend) Sweep(ctx context.Context, retention time.Duration, limit int) (int, error) {
	n, err := sweepBatch(ctx, &b.q, b.DB, b.Now, retention, limit)
	return int(n), err
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

// newOwnerToken returns a token unique to one request: 128 random bits
// (from the runtime's ChaCha8 generator; the token never leaves the server,
// so it needs uniqueness, not secrecy), in hex, in a single allocation.
func newOwnerToken() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	var h [32]byte
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// dbError maps a driver error to this package's vocabulary, in one place:
// a lock wait past WaitLimit, a serialization failure or a deadlock between
// two requests for one key means the key is in flight; cancellation stays
// the context's error; anything else is a storage failure.
func dbError(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("idem: %s: %w", op, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "55P03", // lock_not_available: lock_timeout elapsed
			"40001", // serialization_failure
			"40P01": // deadlock_detected
			e := inFlight(nil)
			e.cause = fmt.Errorf("%s: %w", op, err)
			return e
		}
	}
	return storageError(op, err)
}
