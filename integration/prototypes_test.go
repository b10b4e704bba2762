package integration

// Prototypes: designs measured beside the library in the benchmarks of
// bench_test.go, NOT the library. Each registers itself in a list that a
// benchmark walks after the library's own sub-benchmarks, so that
// docs/BENCHMARKS.md can say what another design would buy; issue work
// that adopts one moves it into the library and deletes it here.
//
//   - sketch-pipelined (miss): the library's own claim and complete
//     statements, with BEGIN in the first batch and COMMIT with the last;
//   - sketch-lock-batched / sketch-lock-pipelined (miss): no claim row; a
//     transaction-level advisory lock on (principal, key) serialises
//     retries, and the handler's answer is inserted once, completed;
//   - sketch-preread (replay): a read outside any transaction answers a
//     completed key in one round trip;
//   - sketch-pause-20ms / sketch-ctid (sweep): the same batches with a pause
//     between them, or deleting the locked rows by ctid.

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/adcp-go/idempotency/db"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
)

// prototype is a benchmark sub-case that is not the library.
type prototype struct {
	name string
	op   func(*benchDB) benchOp
}

// sweepPrototype is a sweep that is not the library's: batch deletes one
// batch, pause separates batches.
type sweepPrototype struct {
	name  string
	batch func(*benchDB) func(context.Context) (int64, error)
	pause time.Duration
}

var (
	missPrototypes = []prototype{
		{"sketch-pipelined", sketchPipelinedMiss},
		{"sketch-lock-batched", func(d *benchDB) benchOp { return sketchLockMiss(d, false) }},
		{"sketch-lock-pipelined", func(d *benchDB) benchOp { return sketchLockMiss(d, true) }},
	}
	replayPrototypes = []prototype{
		{"sketch-preread", sketchPrereadReplay},
	}
	walPrototypes = []prototype{
		{"sketch-lock-pipelined miss (advisory lock, one completed-row insert)", func(d *benchDB) benchOp { return sketchLockMiss(d, true) }},
	}
	sweepPrototypes = []sweepPrototype{
		{"sketch-pause-20ms", func(d *benchDB) func(context.Context) (int64, error) {
			b := &idem.PostgresBackend{DB: d.pool}
			return func(ctx context.Context) (int64, error) {
				n, err := b.Sweep(ctx, backend.SweepRequest{Retention: 24 * time.Hour, Limit: 1000})
				return int64(n), err
			}
		}, 20 * time.Millisecond},
		{"sketch-ctid", func(d *benchDB) func(context.Context) (int64, error) {
			return func(ctx context.Context) (int64, error) {
				tag, err := d.pool.Exec(ctx, sketchSweepByCtid, int64(24*time.Hour/time.Millisecond), 1000)
				return tag.RowsAffected(), err
			}
		}, 0},
	}
)

// sketchSweepByCtid is the sweep statement deleting the rows it locked by
// their ctid (stable while they are locked) instead of joining them back
// through the primary key.
const sketchSweepByCtid = `DELETE FROM idempotency_keys
	WHERE ctid = ANY (ARRAY(
	    SELECT ctid FROM idempotency_keys
	    WHERE expires_at < now() - $1::bigint * interval '1 millisecond'
	    ORDER BY expires_at LIMIT $2::int
	    FOR UPDATE SKIP LOCKED))`

// The sketches' own SQL (the advisory-lock design and the pre-read): the
// previous lock_timeout is kept in a custom setting, so that the restore can
// be sent in the same batch as the rest, before its value is known to the
// client.
const (
	sketchSetLockTimeout = `SELECT set_config('idem.previous_lock_timeout', current_setting('lock_timeout'), true),
		set_config('lock_timeout', $1::text, true)`
	sketchRestoreLockTimeout = `SELECT set_config('lock_timeout', current_setting('idem.previous_lock_timeout'), true)`
	sketchGet                = `SELECT operation, request_hash, response, owner_token, created_at, expires_at, now()
		FROM idempotency_keys WHERE principal_id = $1 AND key = $2`
)

type sketchRow struct {
	operation string
	hash      []byte
	response  []byte
	owner     *string
	created   time.Time
	expires   time.Time
	now       time.Time
}

// captureDBTX is a db.DBTX that sends nothing: it keeps the SQL and the
// arguments of the one statement a generated query method would send, so
// that a sketch can queue the library's own statements in a pgx.Batch.
type captureDBTX struct {
	sql  string
	args []any
}

var errCaptured = errors.New("captured, not sent")

func (c *captureDBTX) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.sql, c.args = sql, args
	return pgconn.CommandTag{}, errCaptured
}

func (c *captureDBTX) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.sql, c.args = sql, args
	return nil, errCaptured
}

func (c *captureDBTX) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	c.sql, c.args = sql, args
	return capturedRow{}
}

type capturedRow struct{}

func (capturedRow) Scan(...any) error { return errCaptured }

// libSQL returns the SQL and arguments that call sends through its DBTX.
func libSQL(call func(db.DBTX)) (string, []any) {
	var c captureDBTX
	call(&c)
	return c.sql, c.args
}

var sketchOwnerSeq atomic.Int64

func sketchOwner() string {
	return "owner-" + benchRun + "-" + strconv.FormatInt(sketchOwnerSeq.Add(1), 10)
}

// sketchPipelinedMiss is RunInTx's miss path with its own statements
// (IdempotencyKeyClaim with the store's defaults: lock_timeout 5000ms,
// expiry 24 h; IdempotencyKeyComplete without a TTL, as RunInTx calls it)
// but BEGIN sent with the claim and COMMIT with the complete: 3 round trips.
// The complete's row count cannot be looked at before the COMMIT in the same
// batch, so a division by zero aborts the transaction if the claimed row
// is not there.
func sketchPipelinedMiss(d *benchDB) benchOp {
	q := db.New()
	return func(ctx context.Context, i int64) error {
		p, key := benchPrincipal(i), benchMissKey(i)
		hash, err := idem.CanonicalJSONSHA256(benchPayload)
		if err != nil {
			return err
		}
		conn, err := d.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		owner := sketchOwner()
		claimSQL, claimArgs := libSQL(func(tx db.DBTX) {
			_, _ = q.IdempotencyKeyClaim(ctx, tx, db.IdempotencyKeyClaimParams{
				PrincipalID: p, Key: key, Operation: "create_media_buy", RequestHash: hash[:], OwnerToken: owner,
				ExpiresMs: int64(24 * time.Hour / time.Millisecond), LockTimeout: "5000ms",
			})
		})
		var claimed bool
		batch := &pgx.Batch{}
		batch.Queue("BEGIN")
		batch.Queue(claimSQL, claimArgs...).QueryRow(func(r pgx.Row) error {
			var op string
			var h, resp []byte
			var expires, now time.Time
			return r.Scan(&claimed, &op, &h, &resp, &expires, &now)
		})
		if err := conn.SendBatch(ctx, batch).Close(); err != nil {
			_, _ = conn.Exec(ctx, "ROLLBACK")
			return err
		}
		if !claimed {
			_, _ = conn.Exec(ctx, "ROLLBACK")
			return errors.New("a fresh key was not claimed")
		}
		v := buy{Budget: 5000}
		if err := conn.QueryRow(ctx, insertBuySQL, p, 5000).Scan(&v.MediaBuyID); err != nil {
			_, _ = conn.Exec(ctx, "ROLLBACK")
			return err
		}
		body, err := json.Marshal(v)
		if err != nil {
			return err
		}
		completeSQL, completeArgs := libSQL(func(tx db.DBTX) {
			_, _ = q.IdempotencyKeyComplete(ctx, tx, db.IdempotencyKeyCompleteParams{
				Response: body, PrincipalID: p, Key: key, OwnerToken: owner,
			})
		})
		batch = &pgx.Batch{}
		batch.Queue(`WITH u AS (`+completeSQL+` RETURNING 1) SELECT 1 / count(*) FROM u`, completeArgs...)
		batch.Queue("COMMIT")
		if err := conn.SendBatch(ctx, batch).Close(); err != nil {
			_, _ = conn.Exec(ctx, "ROLLBACK")
			return err
		}
		return nil
	}
}

const (
	// Two differently seeded 64-bit hashes, so that (a, b) and (b, a) differ;
	// a collision only makes two keys wait for each other.
	sketchLock            = `SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0) # hashtextextended($2::text, 8785))`
	sketchInsertCompleted = `INSERT INTO idempotency_keys (principal_id, key, operation, request_hash, response, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, now(), now() + $6::bigint * interval '1 millisecond')`
)

// sketchLockMiss is the advisory-lock design on a fresh key, in a pgx.Tx
// (pipelined=false) or with BEGIN and COMMIT sent in the batches.
func sketchLockMiss(d *benchDB, pipelined bool) benchOp {
	return func(ctx context.Context, i int64) error {
		p, key := benchPrincipal(i), benchMissKey(i)
		hash, err := idem.CanonicalJSONSHA256(benchPayload)
		if err != nil {
			return err
		}
		conn, err := d.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		batch := &pgx.Batch{}
		var tx pgx.Tx
		if pipelined {
			batch.Queue("BEGIN")
		} else {
			if tx, err = conn.Begin(ctx); err != nil {
				return err
			}
			defer tx.Rollback(ctx)
		}
		abort := func(err error) error {
			if pipelined {
				_, _ = conn.Exec(ctx, "ROLLBACK")
			}
			return err
		}
		var found bool
		batch.Queue(sketchSetLockTimeout, "5000ms")
		batch.Queue(sketchLock, p, key)
		batch.Queue(sketchGet, p, key).QueryRow(func(r pgx.Row) error {
			var row sketchRow
			err := r.Scan(&row.operation, &row.hash, &row.response, &row.owner, &row.created, &row.expires, &row.now)
			found = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		})
		batch.Queue(sketchRestoreLockTimeout)
		if err := conn.SendBatch(ctx, batch).Close(); err != nil {
			return abort(err)
		}
		if found {
			return abort(errors.New("a fresh key has a row"))
		}
		v := buy{Budget: 5000}
		if err := conn.QueryRow(ctx, insertBuySQL, p, 5000).Scan(&v.MediaBuyID); err != nil {
			return abort(err)
		}
		body, err := json.Marshal(v)
		if err != nil {
			return abort(err)
		}
		ttl := int64(24 * time.Hour / time.Millisecond)
		if !pipelined {
			if _, err := tx.Exec(ctx, sketchInsertCompleted, p, key, "create_media_buy", hash[:], body, ttl); err != nil {
				return err
			}
			return tx.Commit(ctx)
		}
		batch = &pgx.Batch{}
		batch.Queue(sketchInsertCompleted, p, key, "create_media_buy", hash[:], body, ttl)
		batch.Queue("COMMIT")
		if err := conn.SendBatch(ctx, batch).Close(); err != nil {
			return abort(err)
		}
		return nil
	}
}

func sketchCheckReplay(row *sketchRow, hash backend.Hash) error {
	if row == nil || row.response == nil || string(row.hash) != string(hash[:]) || row.operation != "create_media_buy" {
		return errors.New("not a replay")
	}
	var v buy
	return json.Unmarshal(row.response, &v)
}

func sketchPrereadReplay(d *benchDB) benchOp {
	return func(ctx context.Context, i int64) error {
		p, key := benchPrincipal(i%replayKeys), replayKey(i)
		hash, err := idem.CanonicalJSONSHA256(benchPayload)
		if err != nil {
			return err
		}
		var row sketchRow
		if err := d.pool.QueryRow(ctx, sketchGet, p, key).Scan(&row.operation, &row.hash, &row.response, &row.owner,
			&row.created, &row.expires, &row.now); err != nil {
			return err
		}
		return sketchCheckReplay(&row, hash)
	}
}
