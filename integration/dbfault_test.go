package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	dockerclient "github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemtest"
	"github.com/adcp-go/idempotency/migrations"
)

// Database faults (issue 7, part 2). Every request ends in a clear outcome
// (a correct answer, an *idem.Error such as ErrStorage or ErrInFlight, a
// context error, or the handler's own error) and the table-wide invariant
// holds: never a stored answer for work that did not commit, never a
// business row without its stored answer.

// faultAt, in a request's context, makes the terminating tracer kill the
// request's backend at the nth statement of a step, before it is sent
// (start) or after it returned.
type faultAt struct {
	step  string
	nth   int32
	start bool
	seen  *atomic.Int32
}

type faultKey struct{}

// terminatingPool is a pool on url whose requests die where their context
// says (see faultAt); admin runs pg_terminate_backend.
func terminatingPool(t *testing.T, url string, admin *pgxpool.Pool) *pgxpool.Pool {
	t.Helper()
	pool, err := tracedPool(context.Background(), url, 8, func(ctx context.Context, conn *pgx.Conn, step string, start bool, _ []any, _ error) {
		f, ok := ctx.Value(faultKey{}).(*faultAt)
		if !ok || f.step != step || f.start != start {
			return
		}
		if f.seen.Add(1) != f.nth {
			return
		}
		if err := terminate(context.WithoutCancel(ctx), admin, conn.PgConn()); err != nil {
			t.Errorf("terminating the request's backend at %s: %v", step, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func withFault(ctx context.Context, step string, nth int32, start bool) context.Context {
	return context.WithValue(ctx, faultKey{}, &faultAt{step: step, nth: nth, start: start, seen: new(atomic.Int32)})
}

// pg_terminate_backend on the request's own connection at each step of
// RunInTx.
func TestReliabilityTerminateBackend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	runs := knob("TERMINATES", 2, 20)
	pool := chaosSchema(t)
	faulty := terminatingPool(t, pool.Config().ConnString(), pool)
	s := newStore(t, nil)

	points := []struct {
		name  string
		step  string
		nth   int32
		start bool
		want  string // the outcome of the request itself
	}{
		{"at BEGIN", stepBegin, 1, true, "ErrStorage"},
		{"at the claim", stepClaim, 1, true, "ErrStorage"},
		{"after the claim", stepClaim, 1, false, "handler error"},
		{"at the handler's business write", stepWrite, 1, true, "handler error"},
		{"at storing the response", stepStore, 1, true, "ErrStorage"},
		{"at COMMIT", stepCommit, 1, true, "ErrStorage"},
		{"after COMMIT", stepCommit, 1, false, "executed"},
	}
	var outcomes, retries tally
	total := 0
	for _, p := range points {
		for i := range runs {
			total++
			key := fmt.Sprintf("terminate-%02d-%s", i, randomID(6))
			req := request("alice", key, chaosPayload(7))
			res, err := idem.RunInTx(withFault(ctx, p.step, p.nth, p.start), s, faulty, req, chaosWrite("alice", key, 7))
			got, clear := classify(res, err)
			outcomes.add(p.name + ":" + got)
			if !clear || got != p.want {
				t.Errorf("terminated %s: %s (%v), want %s", p.name, got, err, p.want)
				continue
			}
			var rows, stored int
			if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM chaos_buys WHERE idem_key = $1),
				(SELECT count(*) FROM idempotency_keys WHERE key = $1)`, key).Scan(&rows, &stored); err != nil {
				t.Fatal(err)
			}
			want := 0
			if got == "executed" {
				want = 1
			}
			if rows != want || stored != want {
				t.Errorf("terminated %s (%s): %d business rows, %d keys; want %d each", p.name, got, rows, stored, want)
			}
			// The buyer retries through the same pool, which may hand out
			// the dead connection once more (pgxpool finds out on use).
			again, attempts, err := retryUntilAnswered(ctx, s, faulty, req, chaosWrite("alice", key, 7))
			r, _ := classify(again, err)
			retries.add(fmt.Sprintf("%s:%s", p.name, r))
			if err != nil || again.Replayed != (got == "executed") {
				t.Errorf("terminated %s: retry after %d attempts = %+v, %v; want replayed=%v", p.name, attempts, again, err, got == "executed")
			}
		}
	}
	rows := invariants(t, pool)
	if rows != total {
		t.Errorf("%d business rows for %d keys", rows, total)
	}
	figure(t, "pg_terminate_backend (RunInTx)", "%d steps x %d runs = %d terminated sessions; requests: %s; retries: %s; business rows %d for %d keys, 0 orphans",
		len(points), runs, total, outcomes.String(), retries.String(), rows, total)
}

// The same fault through a Guard on PostgresBackend, whose claim and answer
// are separate statements around the work: killing the session that
// stores the answer loses it, and the key stays claimed until its lease
// ends; then a retry runs the work again. This is the documented limit of
// a Backend that cannot commit with the business data (README, "Choosing a
// backend"); RunInTx has no such window.
func TestReliabilityTerminateBackendGuard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	faulty := terminatingPool(t, pool.Config().ConnString(), pool)
	clock := idemtest.NewClock(time.Now().UTC())
	const lease = time.Minute
	g, err := idem.NewGuard(&idem.PostgresBackend{DB: faulty}, &idem.Config{Now: clock.Now,
		Limiter: idem.Unlimited, Lease: lease, Duplicates: idem.RejectInFlight,
	})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("upstream said no")
	var outcomes tally
	for _, tc := range []struct {
		name       string
		step       string
		start      bool
		fail       bool   // the handler fails, so the Guard releases the claim
		want       string // outcome of the request
		runsBefore int64  // handler runs by the faulty request
		inFlight   bool   // the key stays claimed until the lease ends
	}{
		{"at the claim", stepClaim, true, false, "ErrStorage", 0, false},
		{"at storing the answer", stepStore, true, false, "ErrStorage", 1, true},
		{"after storing the answer", stepStore, false, false, "executed", 1, false},
		{"at the release after a handler error", stepRelease, true, true, "handler error", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var runs atomic.Int64
			req := request("alice", newKey(), chaosPayload(1))
			handler := func(context.Context) (chaosBuy, error) {
				n := runs.Add(1)
				if tc.fail && n == 1 {
					return chaosBuy{}, boom
				}
				return chaosBuy{ID: n}, nil
			}
			res, err := idem.Do(withFault(ctx, tc.step, 1, tc.start), g, req, handler)
			got, _ := classify(res, err)
			if errors.Is(err, boom) {
				got = "handler error"
			}
			outcomes.add(tc.name + ":" + got)
			if got != tc.want || runs.Load() != tc.runsBefore {
				t.Fatalf("request: %s (%v) after %d runs; want %s after %d", got, err, runs.Load(), tc.want, tc.runsBefore)
			}
			// The buyer's retry; the pool may hand out the killed
			// connection once more, which fails as a storage error.
			again, err := idem.Do(ctx, g, req, handler)
			for i := 0; errors.Is(err, idem.ErrStorage) && i < 10; i++ {
				outcomes.add(tc.name + ":retry ErrStorage (dead pooled connection)")
				again, err = idem.Do(ctx, g, req, handler)
			}
			switch {
			case tc.inFlight:
				if !errors.Is(err, idem.ErrInFlight) {
					t.Fatalf("retry within the lease: %+v, %v; want ErrInFlight", again, err)
				}
				clock.Advance(lease + time.Second)
				again, err = idem.Do(ctx, g, req, handler)
				if err != nil || again.Replayed || runs.Load() != tc.runsBefore+1 {
					t.Fatalf("retry past the lease: %+v, %v after %d runs; want run %d", again, err, runs.Load(), tc.runsBefore+1)
				}
			case got == "executed":
				if err != nil || !again.Replayed || again.Value != res.Value {
					t.Fatalf("retry: %+v, %v; want the replay of %+v", again, err, res.Value)
				}
			default:
				if err != nil || again.Replayed || runs.Load() != 1 {
					t.Fatalf("retry: %+v, %v after %d runs; want the first run", again, err, runs.Load())
				}
			}
			outcomes.add(fmt.Sprintf("%s:runs=%d", tc.name, runs.Load()))
		})
	}
	figure(t, "pg_terminate_backend (Guard + PostgresBackend)", "%s (a session killed between the work and its stored answer blocks the key for the lease, then the work runs again: by design outside RunInTx)", outcomes.String())
}

// Lock waits, statement timeouts, idle-in-transaction timeouts and context
// deadlines, each where it hurts.
func TestReliabilityTimeouts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := chaosSchema(t)
	url := pool.Config().ConnString()
	withParams := func(t *testing.T, params map[string]string) *pgxpool.Pool {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range params {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	s := newStore(t, nil) // WaitLimit 5 s
	var outcomes tally

	// hold runs a request that claims key and blocks in its handler until
	// release is closed; it returns once the claim is held.
	hold := func(t *testing.T, key string) (release func()) {
		held, done := make(chan struct{}), make(chan error, 1)
		ch := make(chan struct{})
		go func() {
			_, err := idem.RunInTx(ctx, s, pool, request("alice", key, chaosPayload(1)), func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
				close(held)
				<-ch
				return chaosWrite("alice", key, 1)(ctx, tx)
			})
			done <- err
		}()
		<-held
		return func() {
			close(ch)
			if err := <-done; err != nil {
				t.Errorf("holder: %v", err)
			}
		}
	}
	// check records the outcome, checks it and that the key stored
	// nothing, then that a plain retry ends with exactly one execution.
	check := func(t *testing.T, name, key string, res idem.Result[chaosBuy], err error, want ...string) {
		t.Helper()
		got, clear := classify(res, err)
		outcomes.add(name + ":" + got)
		if !clear || !contains(want, got) {
			t.Fatalf("%s: %s (%v), want one of %v", name, got, err, want)
		}
		t.Logf("%s: %s: %v", name, got, err)
		again, _, err := retryUntilAnswered(ctx, s, pool, request("alice", key, chaosPayload(1)), chaosWrite("alice", key, 1))
		if err != nil {
			t.Fatalf("%s: retry: %v", name, err)
		}
		if n := count(t, pool, `SELECT count(*) FROM chaos_buys WHERE idem_key = $1`, key); n != 1 {
			t.Fatalf("%s: %d executions after the retry (%+v), want 1", name, n, again)
		}
	}

	t.Run("statement_timeout in the handler", func(t *testing.T) {
		p := withParams(t, map[string]string{"statement_timeout": "300"})
		key := newKey()
		res, err := idem.RunInTx(ctx, s, p, request("alice", key, chaosPayload(1)), func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
			if _, err := chaosWrite("alice", key, 1)(ctx, tx); err != nil {
				return chaosBuy{}, err
			}
			_, err := tx.Exec(ctx, `SELECT pg_sleep(3)`)
			return chaosBuy{}, fmt.Errorf("%w: %w", errBusinessWrite, err)
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Fatalf("error %v, want the handler's query_canceled (57014)", err)
		}
		check(t, "statement_timeout in the handler", key, res, err, "handler error")
	})
	t.Run("statement_timeout while the claim waits", func(t *testing.T) {
		p := withParams(t, map[string]string{"statement_timeout": "300"})
		key := newKey()
		release := hold(t, key)
		res, err := idem.RunInTx(ctx, s, p, request("alice", key, chaosPayload(1)), chaosWrite("alice", key, 1))
		release()
		// statement_timeout (300 ms) ends the claim's wait before
		// WaitLimit (5 s) does; the key is in flight all the same.
		check(t, "statement_timeout while the claim waits", key, res, err, "ErrInFlight")
	})
	t.Run("WaitLimit while the claim waits", func(t *testing.T) {
		short := newStore(t, &idem.Config{WaitLimit: 300 * time.Millisecond})
		key := newKey()
		release := hold(t, key)
		res, err := idem.RunInTx(ctx, short, pool, request("alice", key, chaosPayload(1)), chaosWrite("alice", key, 1))
		release()
		check(t, "lock_timeout (WaitLimit) on the claim", key, res, err, "ErrInFlight")
	})
	t.Run("lock_timeout in the handler", func(t *testing.T) {
		p := withParams(t, map[string]string{"lock_timeout": "300"})
		key := newKey()
		locker, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := locker.Exec(ctx, `LOCK TABLE chaos_buys IN EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		res, err := idem.RunInTx(ctx, s, p, request("alice", key, chaosPayload(1)), chaosWrite("alice", key, 1))
		_ = locker.Rollback(ctx)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
			t.Fatalf("error %v, want the handler's lock_not_available (55P03)", err)
		}
		check(t, "lock_timeout in the handler", key, res, err, "handler error")
	})
	t.Run("idle_in_transaction_session_timeout", func(t *testing.T) {
		p := withParams(t, map[string]string{"idle_in_transaction_session_timeout": "300"})
		key := newKey()
		res, err := idem.RunInTx(ctx, s, p, request("alice", key, chaosPayload(1)), func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
			b, err := chaosWrite("alice", key, 1)(ctx, tx)
			time.Sleep(1500 * time.Millisecond) // a slow call to an ad server, holding the transaction
			return b, err
		})
		check(t, "idle_in_transaction_session_timeout", key, res, err, "ErrStorage")
	})
	t.Run("context deadline in the handler", func(t *testing.T) {
		key := newKey()
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		res, err := idem.RunInTx(dctx, s, pool, request("alice", key, chaosPayload(1)), func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
			if _, err := chaosWrite("alice", key, 1)(ctx, tx); err != nil {
				return chaosBuy{}, err
			}
			_, err := tx.Exec(ctx, `SELECT pg_sleep(3)`)
			return chaosBuy{}, err
		})
		check(t, "context deadline in the handler", key, res, err, "DeadlineExceeded")
	})
	t.Run("context deadline while the claim waits", func(t *testing.T) {
		key := newKey()
		release := hold(t, key)
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		res, err := idem.RunInTx(dctx, s, pool, request("alice", key, chaosPayload(1)), chaosWrite("alice", key, 1))
		cancel()
		release()
		check(t, "context deadline while the claim waits", key, res, err, "DeadlineExceeded")
	})
	invariants(t, pool)
	figure(t, "timeouts", "%s", outcomes.String())
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Pool exhaustion: with every connection held by running requests, a
// request with a deadline fails with the context's error before touching
// the database; one without waits for a connection. Either way each key
// runs exactly once.
func TestReliabilityPoolExhaustion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := chaosSchema(t)
	cfg, err := pgxpool.ParseConfig(base.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := newStore(t, nil)
	var outcomes tally

	// Two requests hold both connections.
	ch := make(chan struct{})
	var holders sync.WaitGroup
	var held sync.WaitGroup
	for i := range 2 {
		held.Add(1)
		holders.Go(func() {
			key := fmt.Sprintf("holder-%d-%s", i, randomID(6))
			_, err := idem.RunInTx(ctx, s, pool, request("alice", key, chaosPayload(1)), func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
				held.Done()
				<-ch
				return chaosWrite("alice", key, 1)(ctx, tx)
			})
			if err != nil {
				t.Errorf("holder: %v", err)
			}
		})
	}
	held.Wait()

	const n = 10
	keys := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		keys[i] = fmt.Sprintf("starved-%d-%s", i, randomID(6))
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			res, err := idem.RunInTx(dctx, s, pool, request("alice", keys[i], chaosPayload(1)), chaosWrite("alice", keys[i], 1))
			got, _ := classify(res, err)
			outcomes.add("with a deadline:" + got)
		})
	}
	wg.Wait()
	if outcomes.get("with a deadline:DeadlineExceeded") != n {
		t.Errorf("requests with a deadline on an exhausted pool: %s; want %d DeadlineExceeded", outcomes.String(), n)
	}
	if k := count(t, base, `SELECT count(*) FROM idempotency_keys WHERE key LIKE 'starved-%'`); k != 0 {
		t.Errorf("%d keys stored by requests that never got a connection", k)
	}

	// Without a deadline they queue for a connection and all run.
	for i := range n {
		wg.Go(func() {
			res, err := idem.RunInTx(ctx, s, pool, request("alice", keys[i], chaosPayload(1)), chaosWrite("alice", keys[i], 1))
			got, _ := classify(res, err)
			outcomes.add("queued:" + got)
		})
	}
	time.Sleep(200 * time.Millisecond) // let them queue behind the holders
	close(ch)
	holders.Wait()
	wg.Wait()
	if outcomes.get("queued:executed") != n {
		t.Errorf("queued requests: %s; want %d executed", outcomes.String(), n)
	}
	rows := invariants(t, base)
	if rows != n+2 {
		t.Errorf("%d business rows, want %d", rows, n+2)
	}
	figure(t, "pool exhaustion", "MaxConns 2, both held; %d requests with a 300 ms deadline, then the same %d without: %s; business rows %d for %d keys",
		n, n, outcomes.String(), rows, n+2)
}

// Postgres itself goes away mid-run: a fast shutdown (docker stop: SIGINT to
// the postmaster) and a crash (docker kill: SIGKILL, then WAL recovery), each
// followed by a start, while workers keep sending requests and retrying
// them as buyers do. On a server of its own, so that no other test loses
// its database.
func TestReliabilityPostgresRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cycles := knob("RESTARTS", 1, 5)
	c, _ := scratchPostgres(t)
	docker, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = docker.Close() })

	// The host port changes at every start; the pool dials whatever the
	// container maps now.
	var endpoint atomic.Pointer[string]
	refresh := func() error {
		e, err := c.PortEndpoint(ctx, "5432/tcp", "")
		if err == nil {
			endpoint.Store(&e)
		}
		return err
	}
	if err := refresh(); err != nil {
		t.Fatal(err)
	}
	url, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.ConnConfig.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", *endpoint.Load())
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := openSQL(t, url)
	if _, err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := pool.Exec(ctx, chaosTable); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, nil)

	// Workers: each sends fresh keys, retrying each until answered, then
	// resends it once and expects the same answer.
	var outcomes tally
	var stop atomic.Bool
	var mu sync.Mutex
	answered := map[string]chaosBuy{}
	var attempted []string
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("restart-w%d-%05d-%s", w, i, randomID(3))
				mu.Lock()
				attempted = append(attempted, key)
				mu.Unlock()
				req := request("alice", key, chaosPayload(i))
				var first idem.Result[chaosBuy]
				for !stop.Load() {
					rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					res, err := idem.RunInTx(rctx, s, pool, req, chaosWrite("alice", key, i))
					cancel()
					got, clear := classify(res, err)
					outcomes.add(got)
					if !clear {
						t.Errorf("request during restarts: unclassified error %v", err)
					}
					if err == nil {
						first = res
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if stop.Load() && first.Response == nil {
					return
				}
				mu.Lock()
				answered[key] = first.Value
				mu.Unlock()
				for !stop.Load() {
					rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					res, err := idem.RunInTx(rctx, s, pool, req, chaosWrite("alice", key, i))
					cancel()
					if err == nil {
						if !res.Replayed || res.Value != first.Value {
							t.Errorf("%s: resend = %+v, want the replay of %+v", key, res, first.Value)
						}
						outcomes.add("resend replayed")
						break
					}
					got, _ := classify(res, err)
					outcomes.add("resend " + got)
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}

	waitUp := func() time.Duration {
		start := time.Now()
		for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err := refresh(); err == nil {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err = pool.Ping(pctx)
				cancel()
				if err == nil {
					return time.Since(start)
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("Postgres did not come back within 120 s")
			}
		}
	}
	var downtimes []string
	pause := func() { time.Sleep(1500 * time.Millisecond) } // let requests flow
	pause()
	for i := range cycles {
		for _, mode := range []string{"stop", "kill"} {
			start := time.Now()
			switch mode {
			case "stop":
				timeout := 10 * time.Second
				if err := c.Stop(ctx, &timeout); err != nil {
					t.Fatalf("docker stop: %v", err)
				}
			case "kill":
				if _, err := docker.ContainerKill(ctx, c.GetContainerID(), dockerclient.ContainerKillOptions{Signal: "KILL"}); err != nil {
					t.Fatalf("docker kill: %v", err)
				}
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
					if st, err := c.State(ctx); err == nil && !st.Running {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the killed container still runs")
					}
				}
			}
			time.Sleep(300 * time.Millisecond)
			if err := c.Start(ctx); err != nil {
				t.Fatalf("docker start after %s: %v", mode, err)
			}
			waitUp()
			downtimes = append(downtimes, fmt.Sprintf("%s#%d %v", mode, i+1, time.Since(start).Round(100*time.Millisecond)))
			pause()
		}
	}
	stop.Store(true)
	wg.Wait()

	// Keys whose answer the workers never got (stopped mid-retry) are
	// retried now: each must end with exactly one execution too.
	for _, key := range attempted {
		if _, ok := answered[key]; ok {
			continue
		}
		var i int
		_, _ = fmt.Sscanf(key[len("restart-w0-"):], "%05d", &i)
		res, _, err := retryUntilAnswered(ctx, s, pool, request("alice", key, chaosPayload(i)), chaosWrite("alice", key, i))
		if err != nil {
			t.Errorf("%s: final retry: %v", key, err)
			continue
		}
		answered[key] = res.Value
	}
	for key, v := range answered {
		var id int64
		if err := pool.QueryRow(ctx, `SELECT id FROM chaos_buys WHERE idem_key = $1`, key).Scan(&id); err != nil || id != v.ID {
			t.Errorf("%s: answered %+v, business row %d (%v)", key, v, id, err)
		}
	}
	rows := invariants(t, pool)
	if rows != len(attempted) {
		t.Errorf("%d business rows for %d keys", rows, len(attempted))
	}
	figure(t, "Postgres restarts", "%d x (docker stop + start) and %d x (docker kill -9 + start, WAL recovery) under 4 retrying workers; down: %v; %d keys, %d business rows, 0 orphans, 0 duplicates; outcomes: %s",
		cycles, cycles, downtimes, len(attempted), rows, outcomes.String())
}
