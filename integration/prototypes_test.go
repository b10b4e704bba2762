package integration

// Prototypes: designs measured beside the library in the benchmarks of
// bench_test.go, NOT the library. Each registers itself in a list that a
// benchmark walks after the library's own sub-benchmarks, so that
// docs/BENCHMARKS.md can say what another design would buy; issue work
// that adopts one moves it into the library and deletes it here.
//
// Adopted and removed from here (issue 19): sketch-pipelined (the library
// now sends BEGIN with the claim and COMMIT with the answer), sketch-preread
// (Config.ReplayPreRead) and sketch-ctid (Store.Sweep deletes by ctid).
//
//   - sketch-lock-batched / sketch-lock-pipelined (miss): no claim row; a
//     transaction-level advisory lock on (principal, key) serialises
//     retries, and the handler's answer is inserted once, completed;
//   - sketch-pause-20ms (sweep): the library's batches with a pause between
//     them;
//   - sketch-join (sweep): the statement Store.Sweep ran before, which joins
//     the locked rows back through the primary key.

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

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
		{"sketch-lock-batched", func(d *benchDB) benchOp { return sketchLockMiss(d, false) }},
		{"sketch-lock-pipelined", func(d *benchDB) benchOp { return sketchLockMiss(d, true) }},
	}
	replayPrototypes = []prototype{}
	walPrototypes    = []prototype{
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
		{"sketch-join", func(d *benchDB) func(context.Context) (int64, error) {
			return func(ctx context.Context) (int64, error) {
				tag, err := d.pool.Exec(ctx, sketchSweepByJoin, int64(24*time.Hour/time.Millisecond), 1000)
				return tag.RowsAffected(), err
			}
		}, 0},
	}
)

// sketchSweepByJoin is the sweep statement of the library before issue 19:
// the locked rows are joined back through the primary key and deleted.
const sketchSweepByJoin = `DELETE FROM idempotency_keys AS k
	USING (
	    SELECT e.principal_id, e.account_id, e.key FROM idempotency_keys AS e
	    WHERE e.expires_at < now() - $1::bigint * interval '1 millisecond'
	    ORDER BY e.expires_at LIMIT $2::int
	    FOR UPDATE SKIP LOCKED
	) AS doomed
	WHERE k.principal_id = doomed.principal_id AND k.account_id = doomed.account_id AND k.key = doomed.key`

// The sketches' own SQL (the advisory-lock design and the pre-read): the
// previous lock_timeout is kept in a custom setting, so that the restore can
// be sent in the same batch as the rest, before its value is known to the
// client.
const (
	sketchSetLockTimeout = `SELECT set_config('idem.previous_lock_timeout', current_setting('lock_timeout'), true),
		set_config('lock_timeout', $1::text, true)`
	sketchRestoreLockTimeout = `SELECT set_config('lock_timeout', current_setting('idem.previous_lock_timeout'), true)`
	sketchGet                = `SELECT operation, request_hash, response, owner_token, created_at, expires_at, now()
		FROM idempotency_keys WHERE principal_id = $1 AND account_id = '' AND key = $2`
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
