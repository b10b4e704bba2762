package integration

// Regression tests for the adversarial review of the at-most-once promise
// (docs/RELIABILITY.md, "Adversarial findings"). Each test names its item.
// The Guard-side items run on every backend in the shared suite (idemtest:
// Do/UnencodableAnswerRunsOnce, Do/SlowHandlerKeepsItsLease, ...); the ones
// here need Postgres itself.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/idem"
)

// Item 3: a handler that ends the transaction it was given.
func TestHardeningHandlerEndsTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	s := newStore(t, nil)

	t.Run("tx.Commit is refused", func(t *testing.T) {
		key := newKey()
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			b, err := createBuy("alice", 1)(ctx, tx)
			if err != nil {
				return b, err
			}
			return b, tx.Commit(ctx)
		})
		if !errors.Is(err, idem.ErrTxEnded) {
			t.Fatalf("handler that commits: %v, want ErrTxEnded", err)
		}
		// The commit was refused and the handler's error rolled everything
		// back: the key is free, not IN_FLIGHT, and a retry runs.
		res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 1))
		if err != nil || res.Replayed {
			t.Fatalf("retry = %+v, %v; want a fresh run", res, err)
		}
		if n := count(t, pool, `SELECT count(*) FROM media_buys WHERE budget = 1`); n != 1 {
			t.Fatalf("%d media buys, want 1", n)
		}
	})

	t.Run("a deferred tx.Rollback is harmless", func(t *testing.T) {
		key := newKey()
		res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			defer func() { _ = tx.Rollback(ctx) }() // a habit from plain pgx code
			return createBuy("alice", 2)(ctx, tx)
		})
		if err != nil {
			t.Fatalf("handler with a deferred Rollback: %v", err)
		}
		again, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 2))
		if err != nil || !again.Replayed || again.Value != res.Value {
			t.Fatalf("retry = %+v, %v; want the stored answer", again, err)
		}
	})

	t.Run(`tx.Exec("COMMIT")`, func(t *testing.T) {
		key := newKey()
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			b, err := createBuy("alice", 3)(ctx, tx)
			if err != nil {
				return b, err
			}
			_, err = tx.Exec(ctx, "COMMIT")
			return b, err
		})
		var e *idem.Error
		if !errors.Is(err, idem.ErrTxEnded) || !errors.As(err, &e) || e.Code != idem.CodeConfigurationError {
			t.Fatalf("handler that sends COMMIT: %v, want ErrTxEnded (CONFIGURATION_ERROR)", err)
		}
		// The buy committed without an answer: every retry gets ErrTxEnded,
		// never IN_FLIGHT and never a second buy.
		for range 2 {
			ran := false
			_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
				ran = true
				return createBuy("alice", 3)(ctx, tx)
			})
			if !errors.Is(err, idem.ErrTxEnded) || ran {
				t.Fatalf("retry: %v (ran %v), want ErrTxEnded without a run", err, ran)
			}
		}
		if n := count(t, pool, `SELECT count(*) FROM media_buys WHERE budget = 3`); n != 1 {
			t.Fatalf("%d media buys, want the 1 the handler committed", n)
		}
	})

	// Found in our own review: a handler that panics after ending the
	// transaction left the claim committed and in flight for the whole TTL.
	t.Run(`tx.Exec("COMMIT") then panic`, func(t *testing.T) {
		key := newKey()
		func() {
			defer func() {
				if r := recover(); r != "bug" {
					t.Fatalf("recovered %v, want the handler's panic", r)
				}
			}()
			_, _ = idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
				if _, err := createBuy("alice", 5)(ctx, tx); err != nil {
					return buy{}, err
				}
				if _, err := tx.Exec(ctx, "COMMIT"); err != nil {
					return buy{}, err
				}
				panic("bug")
			})
		}()
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 5))
		if !errors.Is(err, idem.ErrTxEnded) {
			t.Fatalf("retry after the panic: %v, want ErrTxEnded (not IN_FLIGHT, not a second run)", err)
		}
		if n := count(t, pool, `SELECT count(*) FROM media_buys WHERE budget = 5`); n != 1 {
			t.Fatalf("%d media buys, want 1", n)
		}
	})

	t.Run(`tx.Exec("ROLLBACK")`, func(t *testing.T) {
		key := newKey()
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			b, err := createBuy("alice", 4)(ctx, tx)
			if err != nil {
				return b, err
			}
			_, err = tx.Exec(ctx, "ROLLBACK")
			return b, err
		})
		if !errors.Is(err, idem.ErrTxEnded) {
			t.Fatalf("handler that sends ROLLBACK: %v, want ErrTxEnded", err)
		}
		// Nothing committed, so nothing holds the key: a retry runs.
		if res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 4)); err != nil || res.Replayed {
			t.Fatalf("retry = %+v, %v; want a fresh run", res, err)
		}
		if n := count(t, pool, `SELECT count(*) FROM media_buys WHERE budget = 4`); n != 1 {
			t.Fatalf("%d media buys, want 1", n)
		}
	})
}

// Item 4: a WaitLimit that Postgres's lock_timeout cannot hold is refused at
// construction; the largest one it can hold works.
func TestHardeningWaitLimitBounds(t *testing.T) {
	t.Parallel()
	if _, err := idem.NewStore(&idem.Config{WaitLimit: (1 << 31) * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "WaitLimit") {
		t.Fatalf("WaitLimit of 2^31 ms: %v, want a construction error naming WaitLimit", err)
	}
	pool := newSchema(t)
	s := newStore(t, &idem.Config{WaitLimit: (1<<31 - 1) * time.Millisecond})
	if _, err := idem.RunInTx(context.Background(), s, pool, request("alice", newKey(), payload), createBuy("alice", 1)); err != nil {
		t.Fatalf("RunInTx with the largest WaitLimit: %v", err)
	}
}

// poolAt returns a pool on pool's schema whose transactions run at level.
func poolAt(t *testing.T, pool *pgxpool.Pool, level string) *pgxpool.Pool {
	t.Helper()
	cfg := pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = level
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Item 5: at REPEATABLE READ and SERIALIZABLE, the outcomes are those of
// READ COMMITTED: a duplicate that waited for the first request replays its
// answer, a different payload conflicts. Each request comes from a Store of
// its own, as from three replicas, so that they meet in the database.
func TestHardeningIsolationLevels(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"repeatable read", "serializable"} {
		t.Run(level, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := poolAt(t, newSchema(t), level)
			replica := func() *idem.Store { return newStore(t, &idem.Config{WaitLimit: time.Minute}) }
			key := newKey()
			holding, release := make(chan struct{}), make(chan struct{})
			first := make(chan error, 1)
			go func() {
				_, err := idem.RunInTx(ctx, replica(), pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
					close(holding)
					<-release
					return createBuy("alice", 5000)(ctx, tx)
				})
				first <- err
			}()
			<-holding
			type outcome struct {
				res idem.Result[buy]
				err error
			}
			same, other := make(chan outcome, 1), make(chan outcome, 1)
			go func() {
				res, err := idem.RunInTx(ctx, replica(), pool, request("alice", key, payload), createBuy("alice", 5000))
				same <- outcome{res, err}
			}()
			go func() {
				res, err := idem.RunInTx(ctx, replica(), pool, request("alice", key, `{"budget":1}`), createBuy("alice", 1))
				other <- outcome{res, err}
			}()
			waitForLockWaiters(t, pool, 2)
			close(release)
			if err := <-first; err != nil {
				t.Fatalf("first request: %v", err)
			}
			if o := <-same; o.err != nil || !o.res.Replayed {
				t.Fatalf("duplicate that waited: %+v, %v; want the replayed answer", o.res, o.err)
			}
			if o := <-other; !errors.Is(o.err, idem.ErrConflict) {
				t.Fatalf("different payload that waited: %v, want ErrConflict", o.err)
			}
			if n := buys(t, pool); n != 1 {
				t.Fatalf("%d media buys, want 1", n)
			}
		})
	}

	// In a caller's transaction at REPEATABLE READ, RunInTx cannot take a
	// fresh snapshot: it says so, naming the level, and the caller's retry
	// (a new transaction) replays.
	t.Run("caller's transaction", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		pool := newSchema(t)
		s := newStore(t, nil)
		key := newKey()
		caller, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
		if err != nil {
			t.Fatal(err)
		}
		defer caller.Rollback(ctx)
		if _, err := caller.Exec(ctx, `SELECT count(*) FROM media_buys`); err != nil { // takes the snapshot
			t.Fatal(err)
		}
		if _, err := idem.RunInTx(ctx, newStore(t, nil), pool, request("alice", key, payload), createBuy("alice", 5000)); err != nil {
			t.Fatal(err)
		}
		_, err = idem.RunInTx(ctx, s, caller, request("alice", key, payload), createBuy("alice", 5000))
		var e *idem.Error
		if !errors.Is(err, idem.ErrTxConflict) || !errors.As(err, &e) || e.Recovery != idem.RecoveryTransient || !strings.Contains(err.Error(), "repeatable read") {
			t.Fatalf("claim in a REPEATABLE READ caller transaction: %v, want a transient ErrTxConflict naming the level", err)
		}
		_ = caller.Rollback(ctx)
		err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
			res, err := idem.RunInTx(ctx, s, tx, request("alice", key, payload), createBuy("alice", 5000))
			if err == nil && !res.Replayed {
				err = errors.New("not a replay")
			}
			return err
		})
		if err != nil {
			t.Fatalf("the caller's retry: %v, want a replay", err)
		}
	})
}

// waitForLockWaiters waits until n sessions on pool's database wait for a
// lock.
func waitForLockWaiters(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := count(t, pool, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() AND query LIKE '%idempotency_key_claim%'`)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions wait on a claim, want %d", got, n)
		}
	}
}

// Item 6: a serialization failure or a deadlock while storing the answer or
// committing is a retryable ErrTxConflict, never IN_FLIGHT for a key that
// nobody holds. Triggers in the test's schema inject the failures where
// Postgres raises them in production: at COMMIT (serialization failure of
// SERIALIZABLE) and on the UPDATE that stores the answer.
func TestHardeningSerializationFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	for _, stmt := range []string{
		`CREATE FUNCTION fail_on_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END $$`,
		`CREATE CONSTRAINT TRIGGER fail_on_commit AFTER INSERT ON idempotency_keys
		 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
		 WHEN (NEW.operation = 'serialization_failure') EXECUTE FUNCTION fail_on_commit()`,
		`CREATE FUNCTION deadlock_on_store() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$`,
		`CREATE TRIGGER deadlock_on_store BEFORE UPDATE ON idempotency_keys
		 FOR EACH ROW WHEN (NEW.operation = 'deadlock' AND NEW.response IS NOT NULL) EXECUTE FUNCTION deadlock_on_store()`,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	s := newStore(t, nil)
	for _, op := range []string{"serialization_failure", "deadlock"} {
		t.Run(op, func(t *testing.T) {
			req := request("alice", newKey(), payload)
			req.Operation = op
			_, err := idem.RunInTx(ctx, s, pool, req, createBuy("alice", 1))
			var e *idem.Error
			if !errors.Is(err, idem.ErrTxConflict) || errors.Is(err, idem.ErrInFlight) || !errors.As(err, &e) || e.Recovery != idem.RecoveryTransient {
				t.Fatalf("%s: %v, want a transient ErrTxConflict", op, err)
			}
			if n := count(t, pool, `SELECT count(*) FROM idempotency_keys WHERE key = $1`, req.Key); n != 0 {
				t.Fatalf("%s left %d rows", op, n)
			}
		})
	}
}

// Item 7: PostgresBackend honours the Guard's wait policy, and leaves a
// caller's lock_timeout as it found it.
func TestHardeningPostgresBackendWaitPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	s := newStore(t, nil)

	// hold runs a RunInTx on key that holds its (uncommitted) claim until
	// release is called, or for at most 3 s.
	hold := func(key string) (release func(), done <-chan error) {
		holding, stop := make(chan struct{}), make(chan struct{})
		errc := make(chan error, 1)
		go func() {
			_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
				close(holding)
				select {
				case <-stop:
				case <-time.After(3 * time.Second):
				}
				return createBuy("alice", 1)(ctx, tx)
			})
			errc <- err
		}()
		<-holding
		var once sync.Once
		return func() { once.Do(func() { close(stop) }) }, errc
	}
	for _, cfg := range []idem.Config{
		{WaitLimit: 100 * time.Millisecond},
		{Duplicates: idem.RejectInFlight},
	} {
		name := fmt.Sprintf("WaitLimit %v", cfg.WaitLimit)
		if cfg.Duplicates == idem.RejectInFlight {
			name = "RejectInFlight"
		}
		t.Run(name, func(t *testing.T) {
			cfg.Limiter = idem.Unlimited
			g, err := idem.NewGuard(&idem.PostgresBackend{DB: pool}, &cfg)
			if err != nil {
				t.Fatal(err)
			}
			key := newKey()
			release, done := hold(key)
			// The holder commits after 3 s at the latest; a duplicate that
			// waited for it (the old, fixed 5 s) would replay instead.
			_, err = idem.Do(ctx, g, request("alice", key, payload), func(context.Context) (buy, error) { return buy{}, nil })
			release()
			if !errors.Is(err, idem.ErrInFlight) {
				t.Fatalf("duplicate of a key RunInTx holds: %v, want ErrInFlight within the Guard's wait", err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("caller's lock_timeout", func(t *testing.T) {
		key := newKey()
		if _, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 1)); err != nil {
			t.Fatal(err)
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '42s'`); err != nil {
			t.Fatal(err)
		}
		g, err := idem.NewGuard(&idem.PostgresBackend{DB: tx}, &idem.Config{Limiter: idem.Unlimited})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := idem.Do(ctx, g, request("alice", key, payload), func(context.Context) (buy, error) { return buy{}, nil }); err != nil || !res.Replayed {
			t.Fatalf("Do on the caller's transaction = %+v, %v; want a replay", res, err)
		}
		var lt string
		if err := tx.QueryRow(ctx, `SHOW lock_timeout`).Scan(&lt); err != nil || lt != "42s" {
			t.Fatalf("caller's lock_timeout after the claim = %q (%v), want 42s", lt, err)
		}
	})
}

// Item 9: malformed operation names are refused before the database sees
// them, on RunInTx too.
func TestHardeningMalformedOperationRunInTx(t *testing.T) {
	t.Parallel()
	pool := newSchema(t)
	s := newStore(t, nil)
	for name, op := range map[string]string{"NUL": "create\x00media_buy", "UTF-8": "create_\xffmedia_buy", "10,000 bytes": strings.Repeat("a", 10_000)} {
		req := request("alice", newKey(), payload)
		req.Operation = op
		ran := false
		_, err := idem.RunInTx(context.Background(), s, pool, req, func(ctx context.Context, tx pgx.Tx) (buy, error) {
			ran = true
			return buy{}, nil
		})
		if !errors.Is(err, idem.ErrInvalidOperation) || idem.Wire(err).Code != "INVALID_REQUEST" || ran {
			t.Fatalf("%s: %v (ran %v), want INVALID_REQUEST without a run", name, err, ran)
		}
	}
	if n := keys(t, pool); n != 0 {
		t.Fatalf("%d rows stored", n)
	}
}

// Item 10: a stored answer that no longer decodes into the handler's type
// is ErrUndecodable with its own outcome, on RunInTx too.
func TestHardeningUndecodableAnswerRunInTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	var outcomes []idem.Outcome
	s := newStore(t, &idem.Config{Observer: idem.ObserverFunc(func(_ context.Context, o idem.Observation) { outcomes = append(outcomes, o.Outcome) })})
	key := newKey()
	if _, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 1)); err != nil {
		t.Fatal(err)
	}
	type changed struct {
		MediaBuyID string `json:"media_buy_id"` // was a number
	}
	_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(context.Context, pgx.Tx) (changed, error) { return changed{}, nil })
	if !errors.Is(err, idem.ErrUndecodable) || idem.Wire(err).Code != "CONFIGURATION_ERROR" {
		t.Fatalf("replay into a changed type: %v, want ErrUndecodable", err)
	}
	if len(outcomes) != 2 || outcomes[1] != idem.OutcomeUndecodable {
		t.Fatalf("outcomes %v, want [executed undecodable]", outcomes)
	}
}

// Item 12: the claim is judged at the time of its statement, not at the
// start of a long caller transaction.
func TestHardeningClockIsTheStatementTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	s := newStore(t, nil)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var before time.Time
	if err := tx.QueryRow(ctx, `SELECT pg_sleep(0.3), statement_timestamp()`).Scan(new(string), &before); err != nil {
		// pg_sleep returns void; scan it as text.
		t.Fatal(err)
	}
	key := newKey()
	if _, err := idem.RunInTx(ctx, s, tx, request("alice", key, payload), createBuy("alice", 1)); err != nil {
		t.Fatal(err)
	}
	var createdAt, txStart time.Time
	if err := tx.QueryRow(ctx, `SELECT created_at, now() FROM idempotency_keys WHERE key = $1`, key).Scan(&createdAt, &txStart); err != nil {
		t.Fatal(err)
	}
	if createdAt.Before(before) {
		t.Fatalf("claim judged at %v, before the statement that preceded it (%v); the transaction began at %v", createdAt, before, txStart)
	}
}

// Item 13: a flood of duplicates of one key waits in memory, not on pool
// connections, so another principal's new request is served while the first
// request of the key still runs.
func TestHardeningDuplicatesDoNotStarvePool(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := newSchema(t)
	cfg := base.Config().Copy()
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newStore(t, &idem.Config{WaitLimit: time.Minute})
	key := newKey()
	holding, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			close(holding)
			<-release
			return createBuy("alice", 1)(ctx, tx)
		})
		if err != nil {
			t.Errorf("first request: %v", err)
		}
	})
	<-holding
	var replays atomic.Int32
	for range 8 {
		wg.Go(func() {
			res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy("alice", 1))
			if err != nil || !res.Replayed {
				t.Errorf("duplicate: %+v, %v; want a replay", res, err)
				return
			}
			replays.Add(1)
		})
	}
	time.Sleep(100 * time.Millisecond) // let the duplicates queue up
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := idem.RunInTx(fctx, s, pool, request("bob", newKey(), payload), createBuy("bob", 2)); err != nil {
		t.Fatalf("another principal's new request while 8 duplicates wait: %v", err)
	}
	t.Logf("another principal's request took %v while 8 duplicates waited (pool of 4)", time.Since(start).Round(time.Millisecond))
	close(release)
	wg.Wait()
	if replays.Load() != 8 {
		t.Fatalf("%d of 8 duplicates replayed", replays.Load())
	}
}

// AdCP 3.2 in-flight bound, on RunInTx: a hung owner (its handler ignores
// its context and sits on the transaction) loses its claim at the bound:
// Postgres ends the idle transaction, a duplicate from another replica runs
// the work, and exactly one run commits.
func TestInFlightBoundHungRunInTxOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	s := newStore(t, &idem.Config{InFlightMax: time.Second, WaitLimit: 10 * time.Second})
	key := newKey()
	holding := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			b, err := createBuy("alice", 1)(ctx, tx)
			close(holding)
			time.Sleep(3 * time.Second) // hung: ignores its context, holds the transaction
			return b, err
		})
		first <- err
	}()
	<-holding
	other := newStore(t, &idem.Config{InFlightMax: time.Second, WaitLimit: 10 * time.Second}) // another replica
	res, err := idem.RunInTx(ctx, other, pool, request("alice", key, payload), createBuy("alice", 1))
	if err != nil || res.Replayed {
		t.Fatalf("duplicate after the hung owner's bound: %+v, %v; want a fresh run", res, err)
	}
	if err := <-first; err == nil {
		t.Fatal("the hung owner committed after its bound")
	}
	if n := buys(t, pool); n != 1 {
		t.Fatalf("%d media buys committed, want 1", n)
	}
}
