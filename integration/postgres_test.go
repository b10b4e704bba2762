package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemtest"
	"github.com/adcp-go/idempotency/migrations"
)

type buy struct {
	MediaBuyID int64 `json:"media_buy_id"`
	Budget     int   `json:"budget"`
}

// createBuy is a handler that writes one business row through the given
// transaction, as a seller's create_media_buy would.
func createBuy(principal string, budget int) func(context.Context, pgx.Tx) (buy, error) {
	return func(ctx context.Context, tx pgx.Tx) (buy, error) {
		b := buy{Budget: budget}
		err := tx.QueryRow(ctx, `INSERT INTO media_buys (principal, budget) VALUES ($1, $2) RETURNING id`, principal, budget).Scan(&b.MediaBuyID)
		return b, err
	}
}

func request(principal, key string, payload string) idem.Request {
	return idem.Request{Principal: principal, Key: key, Operation: "create_media_buy", Payload: json.RawMessage(payload)}
}

func newKey() string { return "key-" + randomID(12) }

func newStore(t testing.TB, cfg *idem.Config) *idem.Store {
	t.Helper()
	if cfg == nil {
		cfg = &idem.Config{}
	}
	if cfg.Limiter == nil {
		cfg.Limiter = idem.Unlimited
	}
	s, err := idem.NewStore(cfg)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return s
}

func count(t testing.TB, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func buys(t testing.TB, pool *pgxpool.Pool) int {
	return count(t, pool, `SELECT count(*) FROM media_buys`)
}

func keys(t testing.TB, pool *pgxpool.Pool) int {
	return count(t, pool, `SELECT count(*) FROM idempotency_keys`)
}

const payload = `{"brand":{"domain":"acme.example"},"packages":[{"product_id":"p1","budget":5000}]}`

func TestRunInTxLockWaitGivesInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	s := newStore(t, &idem.Config{WaitLimit: 200 * time.Millisecond})
	key := newKey()
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			close(holding)
			<-release
			return createBuy("alice", 5000)(ctx, tx)
		})
		done <- err
	}()
	<-holding
	_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 5000))
	var e *idem.Error
	if !errors.Is(err, idem.ErrInFlight) || !errors.As(err, &e) || e.Recovery != idem.RecoveryTransient || e.RetryAfter <= 0 {
		t.Fatalf("duplicate during a held claim: %v, want a transient ErrInFlight with a retry hint", err)
	}
	// A different payload conflicts only once the first request's outcome is
	// known: while it runs, its row is invisible, so this waits too.
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first request: %v", err)
	}
	res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 5000))
	if err != nil || !res.Replayed {
		t.Fatalf("retry after the first finished = %+v, %v; want a replay", res, err)
	}
}

func TestRunInTxExpiryTombstoneAndSweep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	clock := idemtest.NewClock(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	s := newStore(t, &idem.Config{TTL: time.Hour, TombstoneRetention: 2 * time.Hour, Now: clock.Now})
	key := newKey()
	if _, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 5000)); err != nil {
		t.Fatal(err)
	}
	other := newKey() // a second key, an hour younger
	clock.Advance(time.Hour)
	if _, err := idem.RunInTx(ctx, s, pool, request("alice", other, payload), createBuy("alice", 5000)); err != nil {
		t.Fatal(err)
	}

	// Within TTL + 60 s skew: still a replay.
	clock.Advance(59 * time.Second)
	if res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 5000)); err != nil || !res.Replayed {
		t.Fatalf("at TTL+59s: %+v, %v; want a replay", res, err)
	}
	// Past it: EXPIRED, for the same payload and for another.
	clock.Advance(2 * time.Second)
	for _, p := range []string{payload, `{"different":true}`} {
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, p), createBuy("alice", 5000))
		if !errors.Is(err, idem.ErrExpired) {
			t.Fatalf("at TTL+61s: %v, want ErrExpired", err)
		}
	}
	if n := s.Capability().ReplayTTLSeconds; n != 3600 {
		t.Fatalf("capability replay_ttl_seconds = %d, want 3600", n)
	}
	// Sweep deletes nothing while the tombstone is within retention.
	if n, err := s.Sweep(ctx, pool); err != nil || n != 0 {
		t.Fatalf("sweep within retention deleted %d (%v), want 0", n, err)
	}
	// Past TTL + retention the key is free: a new execution, no sweep needed.
	clock.Advance(2 * time.Hour)
	res, err := idem.RunInTx(ctx, s, pool, request("alice", key, `{"different":true}`), createBuy("alice", 7))
	if err != nil || res.Replayed {
		t.Fatalf("past retention: %+v, %v; want a fresh execution", res, err)
	}
	// The younger key is now past retention too; the re-used key is fresh.
	clock.Advance(time.Hour + time.Minute)
	n, err := s.Sweep(ctx, pool)
	if err != nil || n != 1 {
		t.Fatalf("sweep deleted %d (%v), want 1", n, err)
	}
	if k := keys(t, pool); k != 1 {
		t.Fatalf("%d keys left, want the re-used one", k)
	}
}

func TestSweepWorksInBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	clock := idemtest.NewClock(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	s := newStore(t, &idem.Config{TTL: time.Hour, TombstoneRetention: time.Hour, SweepBatch: 7, Now: clock.Now})
	for i := range 50 {
		if _, err := idem.RunInTx(ctx, s, pool, request(fmt.Sprint("p", i%3), newKey(), `{}`), createBuy("x", i)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2*time.Hour + time.Second)
	n, err := s.Sweep(ctx, pool)
	if err != nil || n != 50 {
		t.Fatalf("sweep deleted %d (%v), want 50", n, err)
	}
	if k := keys(t, pool); k != 0 {
		t.Fatalf("%d keys left", k)
	}
	// The sweep's scan can use the expiry index (a table this small would be
	// scanned sequentially unless told otherwise).
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, `RESET enable_seqscan`)
	rows, err := conn.Query(ctx, `EXPLAIN (COSTS OFF) SELECT principal_id, key FROM idempotency_keys
		WHERE expires_at < now() ORDER BY expires_at LIMIT 10 FOR UPDATE SKIP LOCKED`)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(plan, "\n"), "idempotency_keys_expires_at_idx") {
		t.Fatalf("sweep plan does not use the expiry index:\n%s", strings.Join(plan, "\n"))
	}
}

// TestSweepByLocationKeepsWhatItMust: the sweep deletes the rows it locked
// by their physical location (ctid). Rows within retention stay, a row past
// retention that another transaction has locked (as a claim taking it over
// does) is skipped and stays, and the next sweep deletes it.
func TestSweepByLocationKeepsWhatItMust(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	clock := idemtest.NewClock(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	s := newStore(t, &idem.Config{TTL: time.Hour, TombstoneRetention: time.Hour, SweepBatch: 3, Now: clock.Now})
	old := make([]string, 10)
	for i := range old {
		old[i] = newKey()
		if _, err := idem.RunInTx(ctx, s, pool, request("alice", old[i], `{}`), createBuy("x", i)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(90 * time.Minute)
	for i := range 5 {
		if _, err := idem.RunInTx(ctx, s, pool, request("alice", newKey(), `{}`), createBuy("y", i)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(45 * time.Minute) // the old rows are past TTL + retention, the new ones are not
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM idempotency_keys WHERE key = $1 FOR UPDATE`, old[4]); err != nil {
		t.Fatal(err)
	}
	n, err := s.Sweep(ctx, pool)
	if err != nil || n != 9 {
		t.Fatalf("sweep deleted %d (%v), want the 9 unlocked rows past retention", n, err)
	}
	if got := count(t, pool, `SELECT count(*) FROM idempotency_keys WHERE key = $1`, old[4]); got != 1 {
		t.Fatalf("the locked row: %d left, want 1", got)
	}
	if k := keys(t, pool); k != 6 {
		t.Fatalf("%d keys left, want the locked one and the 5 within retention", k)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(ctx, pool); err != nil || n != 1 {
		t.Fatalf("second sweep deleted %d (%v), want the row that was locked", n, err)
	}
	if k := keys(t, pool); k != 5 {
		t.Fatalf("%d keys left, want 5", k)
	}
}

func TestRunInTxInCallerTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	s := newStore(t, &idem.Config{WaitLimit: 1500 * time.Millisecond})

	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			key := newKey()
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '42s'`); err != nil {
				t.Fatal(err)
			}
			res, err := idem.RunInTx(ctx, s, tx, request("alice", key, payload), createBuy("alice", 5000))
			if err != nil || res.Replayed {
				t.Fatalf("inside the caller's transaction: %+v, %v", res, err)
			}
			var lt string
			if err := tx.QueryRow(ctx, `SHOW lock_timeout`).Scan(&lt); err != nil || lt != "42s" {
				t.Fatalf("caller's lock_timeout after RunInTx = %q (%v), want 42s back", lt, err)
			}
			// A replay inside the same transaction sees its own claim.
			if again, err := idem.RunInTx(ctx, s, tx, request("alice", key, payload), createBuy("alice", 5000)); err != nil || !again.Replayed {
				t.Fatalf("replay inside the caller's transaction: %+v, %v", again, err)
			}
			if commit {
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			} else if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			want := 0
			if commit {
				want = 1
			}
			k := count(t, pool, `SELECT count(*) FROM idempotency_keys WHERE key = $1`, key)
			b := count(t, pool, `SELECT count(*) FROM media_buys WHERE id = $1`, res.Value.MediaBuyID)
			if k != want || b != want {
				t.Fatalf("after the caller's %s: %d keys, %d media buys; want %d each", map[bool]string{true: "commit", false: "rollback"}[commit], k, b, want)
			}
		})
	}

	t.Run("handler error keeps the caller's transaction usable", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `INSERT INTO media_buys (principal, budget) VALUES ('caller', 1)`); err != nil {
			t.Fatal(err)
		}
		_, err = idem.RunInTx(ctx, s, tx, request("alice", newKey(), payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			_, _ = tx.Exec(ctx, `SELECT 1/0`) // aborts the savepoint
			return buy{}, errors.New("failed")
		})
		if err == nil {
			t.Fatal("want the handler's error")
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("caller's commit after a failed savepoint: %v", err)
		}
		if n := count(t, pool, `SELECT count(*) FROM media_buys WHERE principal = 'caller'`); n != 1 {
			t.Fatalf("caller's own write: %d rows, want 1", n)
		}
	})
}

func TestMigrationsConcurrentUpAndGooseFolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := "m_" + randomID(6)
	admin, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	url := withSearchPath(databaseURL, schema)

	var wg sync.WaitGroup
	applied := make([]int, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Go(func() {
			db := openSQL(t, url)
			defer db.Close()
			applied[i], errs[i] = migrations.Up(ctx, db)
		})
	}
	wg.Wait()
	total := 0
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	files, _ := fs.Glob(migrations.FS, "*.sql")
	if total != len(files) {
		t.Fatalf("replicas applied %v migrations in all, want exactly %d between them", applied, len(files))
	}
	var versionTable, gooseDefault bool
	_ = admin.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL`,
		schema+"."+migrations.VersionTable, schema+".goose_db_version").Scan(&versionTable, &gooseDefault)
	if !versionTable || gooseDefault {
		t.Fatalf("version table %s exists=%v, goose_db_version exists=%v", migrations.VersionTable, versionTable, gooseDefault)
	}

	// The folder also works the way the goose command uses it (its own
	// default version table, files read from disk).
	other := "g_" + randomID(6)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+other); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(context.Background(), "DROP SCHEMA "+other+" CASCADE")
	db := openSQL(t, withSearchPath(databaseURL, other))
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, os.DirFS("../migrations"))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := p.Up(ctx); err != nil || len(res) != len(files) {
		t.Fatalf("goose up on the folder: %v (%d applied)", err, len(res))
	}
	if res, err := p.DownTo(ctx, 0); err != nil || len(res) != len(files) {
		t.Fatalf("goose down on the folder: %v (%d reverted)", err, len(res))
	}
}

// The crash test: a child process claims a key, writes a business row inside
// RunInTx, reports it and is killed with SIGKILL before it can commit.

const childEnv = "IDEM_CRASH_CHILD"

func runChild(spec string) {
	var args struct{ URL, Principal, Key string }
	if err := json.Unmarshal([]byte(spec), &args); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, args.URL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	s, _ := idem.NewStore(nil)
	_, err = idem.RunInTx(ctx, s, pool, request(args.Principal, args.Key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
		b, err := createBuy(args.Principal, 5000)(ctx, tx)
		if err != nil {
			return b, err
		}
		fmt.Println("WROTE")
		time.Sleep(time.Hour) // the parent kills us here
		return b, nil
	})
	fmt.Fprintln(os.Stderr, "child: not killed:", err)
	os.Exit(3)
}

func TestRunInTxCrashBeforeCommitLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	s := newStore(t, nil)
	key := newKey()
	spec, _ := json.Marshal(map[string]string{"URL": pool.Config().ConnString(), "Principal": "alice", "Key": key})

	c, err := startChild(selfCommand(childEnv, string(spec)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.waitLine("WROTE", time.Minute); err != nil {
		c.kill()
		t.Fatal(err)
	}
	// The claim and the business row are written, not committed.
	c.kill()

	// The retry waits for the dead session's transaction to be rolled back,
	// then runs the work: exactly once overall.
	res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 5000))
	if err != nil || res.Replayed {
		t.Fatalf("retry after the crash = %+v, %v; want a fresh execution", res, err)
	}
	again, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 5000))
	if err != nil || !again.Replayed || again.Value != res.Value {
		t.Fatalf("second retry = %+v, %v; want the replay of %+v", again, err, res.Value)
	}
	if b, k := buys(t, pool), keys(t, pool); b != 1 || k != 1 {
		t.Fatalf("%d media buys, %d keys; want exactly 1 each", b, k)
	}
}
