package idem_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

func TestObserveReportsEveryOutcome(t *testing.T) {
	var mu sync.Mutex
	var seen []idem.Outcome
	store := memstore.New(nil)
	defer store.Close()
	g, err := idem.NewGuard(store, &idem.Config{
		Limiter: idem.NewLimiter(idem.Limits{Writes: idem.Rate{PerSecond: 0.0001, Burst: 3}, Reads: idem.Rate{PerSecond: 0.0001, Burst: 3}}), // three new keys, failed ones included
		Observer: idem.ObserverFunc(func(_ context.Context, o idem.Observation) {
			if o.Operation != "create_media_buy" || o.Duration < 0 {
				t.Errorf("observation %+v", o)
			}
			mu.Lock()
			seen = append(seen, o.Outcome)
			mu.Unlock()
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok := func(context.Context) (int, error) { return 1, nil }
	r := func(key, payload string) idem.Request {
		return idem.Request{Principal: "p", Key: key, Operation: "create_media_buy", Payload: []byte(payload)}
	}
	_, _ = idem.Do(ctx, g, r("key-observe-00000001", `{}`), ok)                                                                // executed
	_, _ = idem.Do(ctx, g, r("key-observe-00000001", `{}`), ok)                                                                // replayed
	_, _ = idem.Do(ctx, g, r("key-observe-00000001", `{"x":1}`), ok)                                                           // conflict
	_, _ = idem.Do(ctx, g, r("short", `{}`), ok)                                                                               // invalid
	_, _ = idem.Do(ctx, g, r("key-observe-00000002", `{}`), func(context.Context) (int, error) { return 0, errors.New("no") }) // handler_error
	func() {
		defer func() { _ = recover() }()
		_, _ = idem.Do(ctx, g, r("key-observe-00000003", `{}`), func(context.Context) (int, error) { panic("bug") }) // handler_error
	}()
	_, _ = idem.Do(ctx, g, r("key-observe-00000004", `{}`), ok) // rate_limited (burst of 3 spent)
	want := []idem.Outcome{idem.OutcomeExecuted, idem.OutcomeReplayed, idem.OutcomeConflict, idem.OutcomeInvalid,
		idem.OutcomeHandlerError, idem.OutcomeHandlerError, idem.OutcomeRateLimited}
	if len(seen) != len(want) {
		t.Fatalf("outcomes %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("outcomes %v, want %v", seen, want)
		}
	}
}

type ctxKey struct{}

// recorder is an Observer that records what it sees.
type recorder struct {
	mu     sync.Mutex
	begins int
	ends   []idem.Observation
	swept  int
}

func (r *recorder) Begin(ctx context.Context, op string) context.Context {
	r.mu.Lock()
	r.begins++
	r.mu.Unlock()
	return context.WithValue(ctx, ctxKey{}, op)
}

func (r *recorder) End(_ context.Context, o idem.Observation) {
	r.mu.Lock()
	r.ends = append(r.ends, o)
	r.mu.Unlock()
}

func (r *recorder) Swept(_ context.Context, n int) {
	r.mu.Lock()
	r.swept += n
	r.mu.Unlock()
}

// The Observer's context reaches the handler; every Begin has its End; a
// duplicate that waited reports its wait; sweeps are reported.
func TestObserverSeesCallsWaitsAndSweeps(t *testing.T) {
	store := memstore.New(nil)
	defer store.Close()
	now := time.Now()
	rec := &recorder{}
	g, err := idem.NewGuard(store, &idem.Config{Limiter: idem.Unlimited, Observer: rec, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	req := idem.Request{Principal: "p", Key: "observer-key-000000001", Operation: "create_media_buy", Payload: []byte(`{}`)}
	running, finish := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := idem.Do(context.Background(), g, req, func(ctx context.Context) (int, error) {
			if ctx.Value(ctxKey{}) != "create_media_buy" {
				t.Error("the handler's context is not the Observer's")
			}
			close(running)
			<-finish
			return 1, nil
		})
		first <- err
	}()
	<-running
	dup := make(chan error, 1)
	go func() {
		_, err := idem.Do(context.Background(), g, req, func(context.Context) (int, error) { return 2, nil })
		dup <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the duplicate poll a few times
	close(finish)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-dup; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	if rec.begins != 2 || len(rec.ends) != 2 {
		t.Fatalf("%d Begins, %d Ends; want 2 and 2", rec.begins, len(rec.ends))
	}
	var replay idem.Observation
	for _, o := range rec.ends {
		if o.Outcome == idem.OutcomeReplayed {
			replay = o
		}
	}
	rec.mu.Unlock()
	if replay.Waited <= 0 || replay.Waited > replay.Duration {
		t.Fatalf("the waiting duplicate reported Waited %v of Duration %v", replay.Waited, replay.Duration)
	}
	now = now.Add(49 * time.Hour) // past the TTL and the tombstone retention
	if n, err := g.Sweep(context.Background()); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if rec.swept != 1 {
		t.Fatalf("Swept reported %d, want 1", rec.swept)
	}
}
