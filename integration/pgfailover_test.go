package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/migrations"
)

// Postgres failover (issue 18, item 5): a primary and a streaming replica
// made with pg_basebackup, from the machine's PostgreSQL binaries. Workers
// run RunInTx requests (a business row and the stored answer in one
// transaction) on a pgx pool with both servers in a multi-host URL and
// target_session_attrs=read-write, retrying as a buyer does, while the
// primary stops abruptly (immediate shutdown: no last WAL sent) and the
// replica is promoted (pg_promote). The pool finds the new primary by
// itself.
//
// The replica streams through a link (see link), stalled for a while
// before the stop and cut at it, so that the primary has commits the
// replica lacks, as with a lagging replica or a partition. Three runs:
// asynchronous replication without and with the stall, and synchronous
// replication (synchronous_standby_names) with it.
//
// Asserted: on the new primary every stored answer has its business row
// and every business row its stored answer (nothing answered for work that
// did not commit there); every request caught in the switch got a clear
// error, SERVICE_UNAVAILABLE on the wire (ErrStorage, or the handler's own
// statement failing, which RunInTx returns as it is), and its retries an
// answer; with
// synchronous replication no answer a buyer received is lost. Measured: the
// requests caught in the switch, the commits of the old primary the new one
// lacks (the old data directory is started again, alone, to read them),
// split into those a buyer had been answered and those it had not, and the
// keys executed on both primaries.

// pgFailoverMode is one run of TestReliabilityPostgresFailover.
type pgFailoverMode struct {
	name  string
	sync  bool // synchronous_standby_names names the replica
	stall bool // stall the replication link before the stop
}

func TestReliabilityPostgresFailover(t *testing.T) {
	t.Parallel()
	stall := durationKnob("FAILOVER_STALL", time.Second, 3*time.Second)
	workers := knob("FAILOVER_WORKERS", 6, 16)
	for _, m := range []pgFailoverMode{
		{name: "async-no-stall"},
		{name: "async", stall: true},
		{name: "sync", sync: true, stall: true},
	} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			postgresFailover(t, m, workers, stall)
		})
	}
}

// pgAnswer is one answer a buyer got.
type pgAnswer struct {
	id         int64
	replayed   bool
	beforeStop bool
}

func postgresFailover(t *testing.T, m pgFailoverMode, workers int, stall time.Duration) {
	ctx := context.Background()
	const standby = "replica1"
	primaryDir := pgDataDir(t)
	runPG(t, "initdb", "-D", primaryDir, "-U", "idem", "--auth=trust", "-N", "-E", "UTF8", "--locale=C")
	settings := []string{"wal_level=replica", "max_wal_senders=5"}
	if m.sync {
		settings = append(settings, "synchronous_standby_names="+standby)
	}
	primary := startPG(t, primaryDir, settings...)
	lnk := newLink(t, "127.0.0.1:"+strconv.Itoa(primary.port))
	replicaDir := pgDataDir(t)
	runPG(t, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(lnk.port()), "-U", "idem", "-D", replicaDir, "-X", "stream", "-c", "fast", "-N")
	signal := filepath.Join(replicaDir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if c := pgCredential(t); c != nil {
		chown(t, signal, c)
	}
	// wal_retrieve_retry_interval: how long the replica waits between
	// attempts to read WAL; it bounds how fast a promotion is noticed when
	// the primary is gone (default 5 s).
	replica := startPG(t, replicaDir, fmt.Sprintf("primary_conninfo=host=127.0.0.1 port=%d user=idem application_name=%s", lnk.port(), standby),
		"wal_retrieve_retry_interval=200ms")
	direct, err := pgxpool.New(ctx, primary.url())
	if err != nil {
		t.Fatal(err)
	}
	want := "async"
	if m.sync {
		want = "sync"
	}
	eventually(t, 30*time.Second, "the replica streaming ("+want+")", func() bool {
		var n int
		err := direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming' AND sync_state = $2`, standby, want).Scan(&n)
		return err == nil && n == 1
	})
	sqlDB := openSQL(t, primary.url())
	if _, err := migrations.Up(ctx, sqlDB); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	_ = sqlDB.Close()
	if _, err := direct.Exec(ctx, chaosTable); err != nil {
		t.Fatal(err)
	}
	direct.Close()

	// Both servers in one URL: pgx connects to the first that takes
	// writes, so after the promotion new connections go to the replica.
	pool, err := pgxpool.New(ctx, fmt.Sprintf("postgres://idem@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write&connect_timeout=2&pool_max_conns=%d",
		primary.port, replica.port, workers+2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newStore(t, nil)

	var (
		mu                    sync.Mutex
		answers               = map[string][]pgAnswer{}
		budgets               = map[string]int{}
		unanswered            []string
		stopped               atomic.Bool
		answered              atomic.Int64
		caught, errs, flights atomic.Int64
		handlerErrs           atomic.Int64
		firstAfter            atomic.Int64 // UnixNano of the first commit after the stop
	)
	// The handler: one business row, with an id from this process rather
	// than from a sequence, so that an execution on the old primary and one
	// on the new never share an id (the new primary's sequence resumes
	// below values the old one had handed out).
	var nextID atomic.Int64
	write := func(key string, budget int) func(context.Context, pgx.Tx) (chaosBuy, error) {
		return func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
			b := chaosBuy{ID: nextID.Add(1), Budget: budget}
			if _, err := tx.Exec(ctx, `INSERT INTO chaos_buys (id, principal, idem_key, budget) VALUES ($1, 'alice', $2, $3)`, b.ID, key, budget); err != nil {
				return b, fmt.Errorf("%w: %w", errBusinessWrite, err)
			}
			return b, nil
		}
	}
	send := func(key string, budget int) {
		req := request("alice", key, chaosPayload(budget))
		deadline := time.Now().Add(90 * time.Second)
		for attempt := 1; ; attempt++ {
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := idem.RunInTx(actx, s, pool, req, write(key, budget))
			cancel()
			switch {
			case err == nil:
				a := pgAnswer{res.Value.ID, res.Replayed, !stopped.Load()}
				if !a.beforeStop {
					firstAfter.CompareAndSwap(0, time.Now().UnixNano())
				}
				mu.Lock()
				answers[key] = append(answers[key], a)
				mu.Unlock()
				answered.Add(1)
				return
			case errors.Is(err, idem.ErrStorage) && idem.Wire(err).Code == string(idem.CodeServiceUnavailable):
				errs.Add(1)
				if attempt == 1 {
					caught.Add(1)
				}
			case errors.Is(err, errBusinessWrite) && idem.Wire(err).Code == string(idem.CodeServiceUnavailable):
				// The connection broke under the handler's own statement:
				// RunInTx returns the handler's error as it is (and rolls
				// back); on the wire it is SERVICE_UNAVAILABLE.
				handlerErrs.Add(1)
				if attempt == 1 {
					caught.Add(1)
				}
			case errors.Is(err, idem.ErrInFlight):
				flights.Add(1)
			default:
				kind, _ := classify(res, err)
				t.Errorf("%s: an unclear error (%s): %v", key, kind, err)
			}
			if time.Now().After(deadline) {
				mu.Lock()
				unanswered = append(unanswered, key)
				mu.Unlock()
				return
			}
			time.Sleep(time.Duration(min(attempt, 10)) * 20 * time.Millisecond)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("failover-w%02d-%06d-%s", w, n, randomID(3))
				budget := 1000 + n
				mu.Lock()
				budgets[key] = budget
				mu.Unlock()
				send(key, budget)
			}
		})
	}
	eventually(t, 60*time.Second, "warm-up answers", func() bool { return answered.Load() >= 100 })
	if m.stall {
		lnk.stall()
		time.Sleep(stall)
	}
	primary.stop()
	stoppedAt := time.Now()
	stopped.Store(true) // answers from here on come from the new primary
	lnk.cut()
	// On a busy machine the standby may cancel the promoting statement
	// itself for a recovery conflict (SQLSTATE 40001); it is safe to ask
	// again.
	for attempt := 1; ; attempt++ {
		err := pgExec(ctx, replica.url(), `SELECT pg_promote(true, 60)`)
		if err == nil {
			break
		}
		if attempt == 5 || !strings.Contains(err.Error(), "40001") {
			t.Fatalf("pg_promote: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	promoted := time.Since(stoppedAt)
	atPromotion := answered.Load()
	eventually(t, 60*time.Second, "answers from the new primary", func() bool { return answered.Load() >= atPromotion+100 })
	close(stop)
	wg.Wait()

	// Every key once more: the answer the new primary stored, or a run of
	// its own if the new primary never got the key's commit.
	mu.Lock()
	keys := make([]string, 0, len(budgets))
	for k := range budgets {
		keys = append(keys, k)
	}
	mu.Unlock()
	runJobs(t, workers, keys, func(_ int, key string) error {
		mu.Lock()
		budget := budgets[key]
		mu.Unlock()
		send(key, budget)
		return nil
	})

	rows := invariants(t, pool) // on the new primary
	if rows != len(keys) {
		t.Errorf("%d business rows on the new primary for %d keys", rows, len(keys))
	}

	// What the old primary had committed: its data directory, started
	// again on its own.
	old := startPG(t, primaryDir)
	oldPool, err := pgxpool.New(ctx, old.url())
	if err != nil {
		t.Fatal(err)
	}
	defer oldPool.Close()
	oldIDs, newIDs := buysByKey(t, oldPool), buysByKey(t, pool)

	mu.Lock()
	defer mu.Unlock()
	if len(unanswered) > 0 {
		t.Errorf("%d requests never got an answer in 90 s, e.g. %s", len(unanswered), unanswered[0])
	}
	var lostAnswered, lostUnanswered, reExecuted, preStop int
	for _, key := range keys {
		as := answers[key]
		if len(as) == 0 {
			continue
		}
		final := as[len(as)-1] // the check after the failover
		if newIDs[key] != final.id {
			t.Errorf("%s: the last answer %+v is not the new primary's row %d", key, final, newIDs[key])
		}
		answeredBefore := false
		for _, a := range as {
			if a.beforeStop {
				preStop++
				answeredBefore = true
				if a.id != final.id {
					reExecuted++
				}
			}
		}
		if oldID, ok := oldIDs[key]; ok && newIDs[key] != oldID {
			if answeredBefore {
				lostAnswered++
			} else {
				lostUnanswered++
			}
		}
	}
	if m.sync && (lostAnswered > 0 || reExecuted > 0) {
		t.Errorf("synchronous replication lost %d commits a buyer had been answered for, and %d keys ran again", lostAnswered, reExecuted)
	}
	failover := "no commit after the stop"
	if ns := firstAfter.Load(); ns != 0 {
		failover = time.Unix(0, ns).Sub(stoppedAt).Round(10 * time.Millisecond).String()
	}
	setup := "asynchronous replication"
	if m.sync {
		setup = "synchronous replication (synchronous_standby_names)"
	}
	if m.stall {
		setup += fmt.Sprintf(", replication link stalled %v before the stop", stall)
	} else {
		setup += ", no stall"
	}
	figure(t, "postgres failover "+m.name, "primary + streaming replica (PostgreSQL, pg_basebackup), %s; %d workers of RunInTx on a multi-host pool (target_session_attrs=read-write); primary stopped (immediate), pg_promote returned %v later, first commit on the new primary %v after the stop: %d keys, %d answers before the stop; %d requests caught in the switch (%d ErrStorage and %d failed handler writes, both SERVICE_UNAVAILABLE, and %d IDEMPOTENCY_IN_FLIGHT, all retried and answered); commits of the old primary missing on the new: %d a buyer had been answered for, %d it had not (it got an error and its retry ran on the new primary); %d keys executed on both primaries as the buyer sees it (answered, then run again); new primary: %d business rows, each with its stored answer and vice versa",
		setup, workers, promoted.Round(10*time.Millisecond), failover, len(keys), preStop, caught.Load(), errs.Load(), handlerErrs.Load(), flights.Load(),
		lostAnswered, lostUnanswered, reExecuted, rows)
}

// buysByKey reads the chaos_buys row id of every key.
func buysByKey(t testing.TB, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT idem_key, id FROM chaos_buys`)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int64{}
	var k string
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&k, &id}, func() error { ids[k] = id; return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}
