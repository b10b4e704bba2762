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
//     the locked rows back through the primary key;
//   - BenchmarkPostgresSweepPartitioned and BenchmarkPostgresMissPartitioned:
//     the table partitioned by expiry, swept by dropping partitions, and
//     what that costs a miss (see partitionedKeysDDL).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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

// Sweep by partition (issue 19): a copy of idempotency_keys partitioned by
// range of expires_at, one partition an hour, where the sweep drops the
// partitions entirely past retention instead of deleting rows.
//
// What the design loses: a partitioned table's unique indexes must contain
// the partition key, so the primary key becomes (principal_id, account_id,
// key, expires_at) and no longer says that a key has one row. The library's
// claim (INSERT ... ON CONFLICT (principal_id, account_id, key), whose wait
// on the unique index serialises retries of a key) cannot be written on it
// (no unique index matches the conflict target: 42P10). What it needs
// instead is what sketch-lock-pipelined does: a transaction-level advisory
// lock on (principal, account, key) serialises retries, and a lookup by key
// finds a holder; that lookup cannot be pruned (it does not know expires_at),
// so it probes the primary-key index of every partition (75 here), locking
// each. A row whose expires_at changes (the lease of an in-flight row, then
// the answer's TTL; a takeover) moves to another partition (a DELETE and an
// INSERT), and a concurrent update of a moved row fails with 40001, so the
// one-write design fits it and the library's claim-then-answer does not.
// Partitions must exist before the rows that go in them (an INSERT with no
// partition fails, 23514; a DEFAULT partition would forbid DETACH
// CONCURRENTLY); a row stays up to one partition width past retention.
// What it gains: no expires_at index to maintain, and a sweep that writes
// almost no WAL.
//
// The misses under the sweep are sketchLockMiss(pipelined) on this table.
// sweep=drop is DROP TABLE of each expired partition, sweep=detach-drop
// ALTER TABLE ... DETACH PARTITION then DROP, and
// sweep=detach-concurrently-drop DETACH PARTITION ... CONCURRENTLY then DROP
// of the detached table. partitionLocks prints the locks each takes.

const partitionedKeysDDL = `DROP TABLE idempotency_keys;
	CREATE TABLE idempotency_keys (
	    principal_id text        NOT NULL,
	    account_id   text        NOT NULL DEFAULT '',
	    key          text        NOT NULL,
	    operation    text        NOT NULL,
	    request_hash bytea       NOT NULL,
	    response     bytea,
	    owner_token  text,
	    created_at   timestamptz NOT NULL,
	    expires_at   timestamptz NOT NULL,
	    PRIMARY KEY (principal_id, account_id, key, expires_at),
	    CONSTRAINT idempotency_keys_principal_not_empty CHECK (principal_id <> ''),
	    CONSTRAINT idempotency_keys_key_length CHECK (char_length(key) BETWEEN 16 AND 255),
	    CONSTRAINT idempotency_keys_hash_length CHECK (octet_length(request_hash) = 32),
	    CONSTRAINT idempotency_keys_in_flight_has_owner CHECK (response IS NOT NULL OR owner_token IS NOT NULL)
	) PARTITION BY RANGE (expires_at)`

const partitionPrefix = "idempotency_keys_p"

// ensurePartitions creates the hourly partitions of idempotency_keys that
// cover expires_at from 49 hours ago (the oldest row fillKeys writes
// expires 48 hours ago) to 26 hours ahead (a miss's row expires in 24).
func ensurePartitions(ctx context.Context, pool *pgxpool.Pool) error {
	now := time.Now().UTC().Truncate(time.Hour)
	for h := now.Add(-49 * time.Hour); h.Before(now.Add(26 * time.Hour)); h = h.Add(time.Hour) {
		if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s%s PARTITION OF idempotency_keys FOR VALUES FROM ('%s') TO ('%s')`,
			partitionPrefix, h.Format("2006010215"), h.Format(time.RFC3339), h.Add(time.Hour).Format(time.RFC3339))); err != nil {
			return err
		}
	}
	return nil
}

// expiredPartitions lists the partitions whose every row is past a
// retention of 24 hours, oldest first, with their row counts as of the
// last ANALYZE.
func expiredPartitions(ctx context.Context, pool *pgxpool.Pool) (names []string, rows int64, err error) {
	r, err := pool.Query(ctx, `SELECT c.relname, greatest(c.reltuples, 0)::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'idempotency_keys'::regclass ORDER BY c.relname`)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	cutoff := time.Now().Add(-24 * time.Hour)
	for r.Next() {
		var name string
		var n int64
		if err := r.Scan(&name, &n); err != nil {
			return nil, 0, err
		}
		hour, err := time.Parse("2006010215", strings.TrimPrefix(name, partitionPrefix))
		if err != nil {
			return nil, 0, fmt.Errorf("partition %s: %w", name, err)
		}
		if !hour.Add(time.Hour).After(cutoff) {
			names = append(names, name)
			rows += n
		}
	}
	return names, rows, r.Err()
}

// partitionSweeps are the ways of removing an expired partition, each a
// list of statements run one after the other, outside any transaction.
var partitionSweeps = []struct {
	name  string
	stmts []string
}{
	{"drop", []string{`DROP TABLE %s`}},
	{"detach-drop", []string{`ALTER TABLE idempotency_keys DETACH PARTITION %s`, `DROP TABLE %s`}},
	{"detach-concurrently-drop", []string{`ALTER TABLE idempotency_keys DETACH PARTITION %s CONCURRENTLY`, `DROP TABLE %s`}},
}

// BenchmarkPostgresSweepPartitioned is BenchmarkPostgresSweep on the
// partitioned table (see partitionedKeysDDL): IDEM_BENCH_SWEEP_ROWS rows
// (default 1M) over the last three days, a third of them past retention,
// 4 goroutines running sketchLockMiss on it, and each sweep removing the
// partitions past retention; the same figures (p99-ratio is the misses' p99
// during the sweep over the 5 s before it). Use -benchtime 1x.
func BenchmarkPostgresSweepPartitioned(b *testing.B) {
	total := benchRows("IDEM_BENCH_SWEEP_ROWS", []int64{1_000_000})[0]
	d := benchSchema(b, "sweep_partitioned", func(ctx context.Context, pool *pgxpool.Pool) error {
		if _, err := pool.Exec(ctx, partitionedKeysDDL); err != nil {
			return err
		}
		if err := ensurePartitions(ctx, pool); err != nil {
			return err
		}
		for from := int64(1); from <= total; from += 1_000_000 {
			if err := fillKeys(ctx, pool, from, min(from+999_999, total), 1, total, 0, 3*86400); err != nil {
				return err
			}
		}
		if _, err := pool.Exec(ctx, `VACUUM (ANALYZE, PARALLEL 0) idempotency_keys`); err != nil {
			return err
		}
		if err := explainPartitionedGet(ctx, pool); err != nil {
			return err
		}
		return partitionLocks(ctx, pool)
	})
	ctx := context.Background()
	for _, sw := range partitionSweeps {
		b.Run("sweep="+sw.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				if err := ensurePartitions(ctx, d.pool); err != nil {
					b.Fatal(err)
				}
				topUpExpired(ctx, b, d, total)
				b.StartTimer()
				var gone time.Time // every row that expired before it is past retention
				sweepUnderLoad(b, d, sketchLockMiss(d, true), func(ctx context.Context) (int64, error) {
					gone = time.Now().Add(-24 * time.Hour).Truncate(time.Hour)
					names, rows, err := expiredPartitions(ctx, d.pool)
					if err != nil {
						return 0, err
					}
					for _, name := range names {
						for _, st := range sw.stmts {
							if _, err := d.pool.Exec(ctx, fmt.Sprintf(st, name)); err != nil {
								return 0, err
							}
						}
					}
					return rows, nil
				})
				b.StopTimer()
				var left int64
				if err := d.pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE expires_at < $1`, gone).Scan(&left); err != nil {
					b.Fatal(err)
				}
				if left != 0 {
					b.Fatalf("%d rows that expired before %v are left after the sweep", left, gone)
				}
				b.StartTimer()
			}
		})
	}
}

// partitionLocks prints the locks that removing a partition takes, on a
// scratch partitioned table: DROP TABLE and DETACH PARTITION each in a
// transaction that is rolled back, and DETACH PARTITION CONCURRENTLY (which
// cannot run in a transaction block) while an older transaction holds it
// waiting for its snapshot, and whether an INSERT into the parent gets
// through meanwhile.
func partitionLocks(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS lockprobe;
		CREATE TABLE lockprobe (k int NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (k, at)) PARTITION BY RANGE (at);
		CREATE TABLE lockprobe_old PARTITION OF lockprobe FOR VALUES FROM ('2000-01-01') TO ('2001-01-01');
		CREATE TABLE lockprobe_new PARTITION OF lockprobe FOR VALUES FROM ('2001-01-01') TO ('3000-01-01')`); err != nil {
		return err
	}
	// By oid: a transaction that dropped lockprobe_old no longer sees its
	// pg_class row.
	var parent, part uint32
	if err := pool.QueryRow(ctx, `SELECT 'lockprobe'::regclass::oid, 'lockprobe_old'::regclass::oid`).Scan(&parent, &part); err != nil {
		return err
	}
	const heldSQL = `SELECT coalesce(string_agg(CASE l.relation WHEN $2 THEN 'parent' ELSE 'partition' END || ' ' || l.mode ||
		CASE WHEN l.granted THEN '' ELSE ' (waiting)' END, ', ' ORDER BY l.relation = $2 DESC, l.mode), 'none')
		FROM pg_locks l WHERE l.pid = $1 AND l.relation IN ($2, $3)`
	held := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}, pid uint32, locks *string) error {
		return q.QueryRow(ctx, heldSQL, pid, parent, part).Scan(locks)
	}
	for _, st := range []string{`DROP TABLE lockprobe_old`, `ALTER TABLE lockprobe DETACH PARTITION lockprobe_old`} {
		var locks string
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, st); err != nil {
				return err
			}
			if err := held(tx, tx.Conn().PgConn().PID(), &locks); err != nil {
				return err
			}
			return errors.New("roll back")
		})
		if err != nil && err.Error() != "roll back" {
			return err
		}
		fmt.Printf("Locks of %s (in a transaction, rolled back): %s\n", st, locks)
	}
	old, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer old.Rollback(ctx)
	if _, err := old.Exec(ctx, `SELECT count(*) FROM lockprobe`); err != nil {
		return err
	}
	detacher, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer detacher.Release()
	pid := detacher.Conn().PgConn().PID()
	done := make(chan error, 1)
	go func() {
		_, err := detacher.Exec(ctx, `ALTER TABLE lockprobe DETACH PARTITION lockprobe_old CONCURRENTLY`)
		done <- err
	}()
	var locks, event string
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		var waiting bool
		if err := pool.QueryRow(ctx, `SELECT coalesce(wait_event_type = 'Lock', false), coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&waiting, &event); err != nil {
			return err
		}
		if waiting {
			if err := held(pool, pid, &locks); err != nil {
				return err
			}
			break
		}
	}
	// Bounded: were the INSERT blocked, it would wait for the DETACH, which
	// waits for old.
	insertCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	insert, err := pool.Exec(insertCtx, `INSERT INTO lockprobe VALUES (1, '2500-01-01')`)
	cancel()
	if err := old.Rollback(ctx); err != nil {
		return err
	}
	if err := errors.Join(err, <-done); err != nil {
		return err
	}
	if locks == "" {
		return errors.New("DETACH PARTITION CONCURRENTLY did not wait for the older transaction")
	}
	fmt.Printf("Locks of DETACH PARTITION CONCURRENTLY while it waits (wait event %s) for an older transaction that read the parent: %s; an INSERT into the parent meanwhile: %s\n", event, locks, insert)
	_, err = pool.Exec(ctx, `DROP TABLE lockprobe, lockprobe_old`)
	return err
}

// BenchmarkPostgresMissPartitioned is the price of partitioning on the
// miss: sketchLockMiss(pipelined) on the plain table (table=plain) and on
// the partitioned one (table=partitioned: 75 hourly partitions, empty),
// whose lookup by key probes every partition. Rounds as BenchmarkPostgresMiss.
func BenchmarkPostgresMissPartitioned(b *testing.B) {
	plain := benchSchema(b, "miss_unpartitioned", nil)
	parted := benchSchema(b, "miss_partitioned", func(ctx context.Context, pool *pgxpool.Pool) error {
		if _, err := pool.Exec(ctx, partitionedKeysDDL); err != nil {
			return err
		}
		return ensurePartitions(ctx, pool)
	})
	for range benchRounds() {
		for _, c := range concurrencies {
			for _, t := range []struct {
				name string
				d    *benchDB
			}{{"plain", plain}, {"partitioned", parted}} {
				b.Run(fmt.Sprintf("c=%d/table=%s", c, t.name), func(b *testing.B) { measure(b, t.d, c, sketchLockMiss(t.d, true)) })
			}
		}
	}
}

// explainPartitionedGet prints the plan of the design's lookup by key
// (sketchGet) on the partitioned table, for a key that is there: how many
// partitions it probes, with planning and execution time.
func explainPartitionedGet(ctx context.Context, pool *pgxpool.Pool) error {
	var p, key string
	if err := pool.QueryRow(ctx, `SELECT principal_id, key FROM idempotency_keys LIMIT 1`).Scan(&p, &key); err != nil {
		return err
	}
	rows, err := pool.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) `+sketchGet, p, key)
	if err != nil {
		return err
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	// The plan has a node per partition: count them, and keep the top
	// node, the planning figures and the times.
	var indexScans, seqScans int
	var kept []string
	for i, l := range plan {
		switch {
		case strings.Contains(l, "Index Scan using"):
			indexScans++
		case strings.Contains(l, "Seq Scan on"):
			seqScans++
		}
		if i < 2 || strings.Contains(l, "Planning") || strings.Contains(l, "Execution Time") || plan[i-1] == "Planning:" {
			kept = append(kept, strings.TrimSpace(l))
		}
	}
	fmt.Printf("Plan of the lookup by key on the partitioned table: %d index scans and %d sequential scans (empty partitions), one per partition; %s\n",
		indexScans, seqScans, strings.Join(kept, "; "))
	return nil
}
