package integration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemtest"
)

// sentLog records what a connection sends: one entry per statement or
// batch (each one network round trip once its statements are prepared),
// with the batch's statements joined by " | ".
type sentLog struct {
	mu   sync.Mutex
	sent []string
}

func (l *sentLog) add(s string) {
	l.mu.Lock()
	l.sent = append(l.sent, s)
	l.mu.Unlock()
}

func (l *sentLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sent
	l.sent = nil
	return s
}

// firstWord is the statement's first keyword, after sqlc's "-- name:"
// comment line.
func firstWord(sql string) string {
	sql = strings.TrimSpace(sql)
	if strings.HasPrefix(sql, "-- ") {
		_, sql, _ = strings.Cut(sql, "\n")
	}
	f := strings.Fields(sql)
	if len(f) == 0 {
		return ""
	}
	return strings.ToUpper(strings.TrimSuffix(f[0], ";"))
}

func (l *sentLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.add(firstWord(d.SQL))
	return ctx
}
func (l *sentLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (l *sentLog) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	var parts []string
	for _, q := range d.Batch.QueuedQueries {
		parts = append(parts, firstWord(q.SQL))
	}
	l.add(strings.Join(parts, " | "))
	return ctx
}
func (l *sentLog) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (l *sentLog) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// sentPool is a second pool on the schema of pool, whose connections
// report what they send to the returned log.
func sentPool(t *testing.T, pool *pgxpool.Pool) (*pgxpool.Pool, *sentLog) {
	t.Helper()
	cfg := pool.Config().Copy()
	log := &sentLog{}
	cfg.ConnConfig.Tracer = log
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, log
}

func sameSent(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestRunInTxRoundTrips checks what RunInTx sends, statement by statement
// (the claim is a SELECT of idempotency_key_claim, the answer a WITH ...
// UPDATE): where it owns the connection, BEGIN goes in one batch with the
// claim and the answer in one batch with COMMIT, so that a new key costs
// the round trips of a plain BEGIN, INSERT, COMMIT and a replay two; with
// Config.ReplayPreRead a replay is one read; in a caller's transaction
// nothing is pipelined (a savepoint, as before).
func TestRunInTxRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, log := sentPool(t, newSchema(t))
	s := newStore(t, nil)
	pre := newStore(t, &idem.Config{ReplayPreRead: true})
	replayOnly := func(context.Context, pgx.Tx) (buy, error) { return buy{}, errors.New("the handler ran on a replay") }

	// A first call prepares the statements on the connection (a round trip
	// of its own per statement); the counts below are the steady state.
	warm := newKey()
	for _, st := range []*idem.Store{s, pre} {
		if _, err := idem.RunInTx(ctx, st, pool, request("alice", warm, payload), createBuy(warm, 5000)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := idem.RunInTx(ctx, s, pool, request("alice", newKey(), payload), createBuy("x", 5000)); err != nil {
		t.Fatal(err)
	}
	log.take()

	key := newKey()
	if res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy(key, 5000)); err != nil || res.Replayed {
		t.Fatalf("miss = %+v, %v", res, err)
	}
	if got := log.take(); !sameSent(got, "BEGIN | SELECT", "INSERT", "WITH | COMMIT") {
		t.Errorf("a miss sent %q; want BEGIN with the claim, the handler's INSERT, the answer with COMMIT", got)
	}
	if res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), replayOnly); err != nil || !res.Replayed {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	if got := log.take(); !sameSent(got, "BEGIN | SELECT", "ROLLBACK") {
		t.Errorf("a replay sent %q; want BEGIN with the claim, then ROLLBACK", got)
	}
	if res, err := idem.RunInTx(ctx, pre, pool, request("alice", key, payload), replayOnly); err != nil || !res.Replayed {
		t.Fatalf("replay with the pre-read = %+v, %v", res, err)
	}
	if got := log.take(); !sameSent(got, "SELECT") {
		t.Errorf("a replay with the pre-read sent %q; want one SELECT", got)
	}
	key2 := newKey()
	if res, err := idem.RunInTx(ctx, pre, pool, request("alice", key2, payload), createBuy(key2, 5000)); err != nil || res.Replayed {
		t.Fatalf("miss with the pre-read = %+v, %v", res, err)
	}
	if got := log.take(); !sameSent(got, "SELECT", "BEGIN | SELECT", "INSERT", "WITH | COMMIT") {
		t.Errorf("a miss with the pre-read sent %q; want the pre-read, then the miss", got)
	}

	// In a caller's transaction: a savepoint, the claim, the handler, the
	// answer, the release; the pre-read does not apply.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	log.take()
	key3 := newKey()
	if _, err := idem.RunInTx(ctx, pre, tx, request("alice", key3, payload), createBuy(key3, 5000)); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); !sameSent(got, "SAVEPOINT", "SELECT", "INSERT", "WITH", "RELEASE") {
		t.Errorf("a miss in a caller's transaction sent %q", got)
	}
	if _, err := idem.RunInTx(ctx, pre, tx, request("alice", key3, payload), replayOnly); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); !sameSent(got, "SAVEPOINT", "SELECT", "ROLLBACK") {
		t.Errorf("a replay in a caller's transaction sent %q", got)
	}
}

// TestRunInTxOnAConnection runs RunInTx on a *pgx.Conn and on a
// *pgxpool.Conn (the pipelined form, without a pool to acquire from): a
// miss, its replay, a conflict and a handler error, after each of which the
// connection is idle and usable.
func TestRunInTxOnAConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Release()
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, c := range []struct {
		name string
		db   idem.DB
		pg   *pgx.Conn
	}{{"pgx.Conn", conn, conn}, {"pgxpool.Conn", pc, pc.Conn()}} {
		for _, preRead := range []bool{false, true} {
			s := newStore(t, &idem.Config{ReplayPreRead: preRead})
			idle := func(step string) {
				t.Helper()
				if st := c.pg.PgConn().TxStatus(); st != 'I' {
					t.Fatalf("%s, pre-read %v: after %s the connection's status is %q, want idle", c.name, preRead, step, st)
				}
			}
			key := newKey()
			first, err := idem.RunInTx(ctx, s, c.db, request("alice", key, payload), createBuy(key, 5000))
			if err != nil || first.Replayed {
				t.Fatalf("%s: miss = %+v, %v", c.name, first, err)
			}
			idle("a miss")
			again, err := idem.RunInTx(ctx, s, c.db, request("alice", key, payload), createBuy(key, 5000))
			if err != nil || !again.Replayed || again.Value != first.Value {
				t.Fatalf("%s: replay = %+v, %v; want %+v replayed", c.name, again, err, first.Value)
			}
			idle("a replay")
			_, err = idem.RunInTx(ctx, s, c.db, request("alice", key, strings.Replace(payload, "5000", "6000", 1)), createBuy(key, 6000))
			if !errors.Is(err, idem.ErrConflict) {
				t.Fatalf("%s: other payload: %v, want ErrConflict", c.name, err)
			}
			idle("a conflict")
			boom := errors.New("boom")
			key2 := newKey()
			if _, err := idem.RunInTx(ctx, s, c.db, request("alice", key2, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
				if _, err := createBuy(key2, 1)(ctx, tx); err != nil {
					return buy{}, err
				}
				return buy{}, boom
			}); !errors.Is(err, boom) {
				t.Fatalf("%s: handler error: %v", c.name, err)
			}
			idle("a handler error")
			if n := count(t, pool, `SELECT count(*) FROM media_buys WHERE principal = ANY($1)`, []string{key, key2}); n != 1 {
				t.Fatalf("%s: %d media buys, want 1", c.name, n)
			}
		}
	}
}

// TestRunInTxHandlerTransaction checks the transaction a handler gets in
// the pipelined form: nested Begin makes savepoints that commit and roll
// back on their own, Commit and Rollback are refused with ErrTxEnded, and
// once RunInTx has returned every statement on it fails with
// pgx.ErrTxClosed, as on a pgx transaction that was committed (its COMMIT
// went in a batch, which pgx's Tx did not see).
func TestRunInTxHandlerTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newSchema(t)
	s := newStore(t, nil)
	key := newKey()
	var kept pgx.Tx
	var nested pgx.Tx
	_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
		kept = tx
		if err := tx.Commit(ctx); !errors.Is(err, idem.ErrTxEnded) {
			t.Errorf("Commit = %v, want ErrTxEnded", err)
		}
		if err := tx.Rollback(ctx); !errors.Is(err, idem.ErrTxEnded) {
			t.Errorf("Rollback = %v, want ErrTxEnded", err)
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			return buy{}, err
		}
		if _, err := createBuy(key+"-undone", 1)(ctx, sp); err != nil {
			return buy{}, err
		}
		if err := sp.Rollback(ctx); err != nil {
			return buy{}, err
		}
		sp, err = tx.Begin(ctx)
		if err != nil {
			return buy{}, err
		}
		nested = sp
		b, err := createBuy(key, 5000)(ctx, sp)
		if err != nil {
			return buy{}, err
		}
		return b, sp.Commit(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, `SELECT count(*) FROM media_buys WHERE principal = $1`, key); n != 1 {
		t.Fatalf("%d media buys from the committed savepoint, want 1", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM media_buys WHERE principal = $1`, key+"-undone"); n != 0 {
		t.Fatalf("%d media buys from the rolled back savepoint, want 0", n)
	}
	for name, tx := range map[string]pgx.Tx{"the handler's transaction": kept, "a savepoint in it": nested} {
		if _, err := tx.Exec(ctx, `SELECT 1`); !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("%s after RunInTx: Exec = %v, want pgx.ErrTxClosed", name, err)
		}
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1`).Scan(&one); !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("%s after RunInTx: QueryRow = %v, want pgx.ErrTxClosed", name, err)
		}
		rows, err := tx.Query(ctx, `SELECT 1`)
		if !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("%s after RunInTx: Query = %v, want pgx.ErrTxClosed", name, err)
		}
		rows.Close()
		if err := tx.SendBatch(ctx, &pgx.Batch{}).Close(); !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("%s after RunInTx: SendBatch = %v, want pgx.ErrTxClosed", name, err)
		}
		if _, err := tx.Begin(ctx); !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("%s after RunInTx: Begin = %v, want pgx.ErrTxClosed", name, err)
		}
	}
	if err := nested.Commit(ctx); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("savepoint Commit after RunInTx = %v, want pgx.ErrTxClosed", err)
	}
}

// TestRunInTxPreRead checks what Config.ReplayPreRead answers by itself and
// what it leaves to the claim: a completed key is replayed, or a conflict,
// from the read; a key in flight (held by an uncommitted transaction, which
// the read cannot see) goes to the claim, which waits for it and replays
// its answer; another principal's key with the same name is never answered
// from the read; a key past its window goes to the claim (ErrExpired), and a
// key past its tombstone runs again.
func TestRunInTxPreRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, log := sentPool(t, newSchema(t))
	now := idemtest.NewClock(time.Now())
	s := newStore(t, &idem.Config{ReplayPreRead: true, Now: now.Now})
	var runs int
	handler := func(key string) func(context.Context, pgx.Tx) (buy, error) {
		return func(ctx context.Context, tx pgx.Tx) (buy, error) {
			runs++
			return createBuy(key, 5000)(ctx, tx)
		}
	}
	key := newKey()
	first, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), handler(key))
	if err != nil {
		t.Fatal(err)
	}
	log.take()

	res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), handler(key))
	if err != nil || !res.Replayed || res.Value != first.Value {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	if got := log.take(); len(got) != 1 {
		t.Errorf("a replay sent %q; want the pre-read alone", got)
	}
	_, err = idem.RunInTx(ctx, s, pool, request("alice", key, strings.Replace(payload, "5000", "7000", 1)), handler(key))
	if !errors.Is(err, idem.ErrConflict) {
		t.Fatalf("other payload: %v, want ErrConflict", err)
	}
	if got := log.take(); len(got) != 1 {
		t.Errorf("a conflict sent %q; want the pre-read alone", got)
	}
	other := idem.Request{Principal: "alice", Key: key, Operation: "update_media_buy", Payload: []byte(payload)}
	if _, err := idem.RunInTx(ctx, s, pool, other, handler(key)); !errors.Is(err, idem.ErrConflict) {
		t.Fatalf("other operation: %v, want ErrConflict", err)
	}
	log.take()

	// Bob's key of the same name is his own: the read finds nothing, the
	// claim runs his handler.
	res, err = idem.RunInTx(ctx, s, pool, request("bob", key, payload), handler(key))
	if err != nil || res.Replayed {
		t.Fatalf("bob, same key name = %+v, %v; want a fresh run", res, err)
	}
	if got := log.take(); len(got) != 1+3 {
		t.Errorf("bob's miss sent %q; want the pre-read, then the claim's three round trips", got)
	}

	// In flight: a transaction holds a claim; the read sees no completed
	// row, the claim waits for the holder and replays what it committed.
	held := newKey()
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := idem.RunInTx(ctx, s, pool, request("alice", held, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			close(holding)
			<-release
			return createBuy(held, 5000)(ctx, tx)
		})
		done <- err
	}()
	<-holding
	other2 := newStore(t, &idem.Config{ReplayPreRead: true, Now: now.Now}) // another replica: no in-process turn
	waiting := make(chan struct{})
	var dup idem.Result[buy]
	var dupErr error
	go func() {
		defer close(waiting)
		dup, dupErr = idem.RunInTx(ctx, other2, pool, request("alice", held, payload), func(context.Context, pgx.Tx) (buy, error) {
			return buy{}, errors.New("the duplicate ran")
		})
	}()
	waitForLockWaiters(t, pool, 1)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-waiting
	if dupErr != nil || !dup.Replayed {
		t.Fatalf("duplicate of a key in flight = %+v, %v; want the holder's answer replayed", dup, dupErr)
	}

	// Past the replay window: ErrExpired from the claim. Past the tombstone:
	// the key is free and runs again.
	now.Advance(idem.DefaultTTL + 2*time.Minute)
	if _, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), handler(key)); !errors.Is(err, idem.ErrExpired) {
		t.Fatalf("past the window: %v, want ErrExpired", err)
	}
	now.Advance(24 * time.Hour)
	before := runs
	res, err = idem.RunInTx(ctx, s, pool, request("alice", key, payload), handler(key))
	if err != nil || res.Replayed || runs != before+1 {
		t.Fatalf("past the tombstone = %+v, %v (runs %d → %d); want a fresh run", res, err, before, runs)
	}
}
