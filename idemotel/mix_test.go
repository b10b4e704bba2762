package idemotel_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/adcp-go/idempotency/memstore"
)

// The operations of the scripted mix.
const (
	opCreate = "create_media_buy"
	opUpdate = "update_media_buy"
)

// handlerSpan is the name of the span the handler of the mix's blocking
// create_media_buy call starts from its context.
const handlerSpan = "book inventory"

// want is one series the mix must produce: its attributes and how many
// calls it counts.
type want struct {
	op, outcome, errorType string
	calls                  int
}

// mixCalls is what runMix records in idempotency.calls, series by series.
var mixCalls = []want{
	{opCreate, "executed", "", 2},
	{opCreate, "replayed", "", 1},
	{opCreate, "conflict", "", 1},
	{opCreate, "invalid", "", 1},
	{opCreate, "in_flight", "", 1},
	{opCreate, "rate_limited", "", 1},
	{opCreate, "expired", "", 1},
	{opCreate, "error", "handler_error", 1},
	{opCreate, "error", "canceled", 1},
	{opCreate, "error", "storage_error", 1},
	{opUpdate, "executed", "", 1},
	{opUpdate, "replayed", "", 1},
}

// mixWaited is the one series of idempotency.duplicate.wait.duration: the
// duplicate that waited for the running update_media_buy and replayed its
// answer.
var mixWaited = want{opUpdate, "replayed", "", 1}

// mixSwept is how many entries the mix's sweep deletes (in two batches).
const mixSwept = 3

// runMix drives a scripted mix of outcomes through two Guards observed by
// obs, on one memstore: a Guard with RejectInFlight and a limiter of three
// new keys for create_media_buy, a Guard with WaitThenReplay for
// update_media_buy. The handler of one call starts a span named
// handlerSpan with tp. It ends with a sweep of mixSwept entries.
func runMix(t *testing.T, obs idem.Observer, tp trace.TracerProvider) {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	store := memstore.New(&memstore.Options{SweepInterval: -1})
	t.Cleanup(func() { _ = store.Close() })
	b := &probe{Backend: store, failKey: "mix-key-storage-down", waitKey: "mix-key-update-0001", held: make(chan struct{}, 1)}
	g, err := idem.NewGuard(b, &idem.Config{
		Observer: obs, Now: clk.now, SweepBatch: 2,
		Duplicates: idem.RejectInFlight,
		Limiter:    idem.NewLimiter(idem.Limits{Writes: idem.Rate{PerSecond: 0.0001, Burst: 3}, Reads: idem.Rate{PerSecond: 0.0001, Burst: 3}}), // three new keys, failed ones included
	})
	if err != nil {
		t.Fatal(err)
	}
	w, err := idem.NewGuard(b, &idem.Config{Observer: obs, Now: clk.now, Limiter: idem.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	req := func(op, key, payload string) idem.Request {
		return idem.Request{Principal: "agent-mix", Key: key, Operation: op, Payload: []byte(payload)}
	}
	ok := func(context.Context) (string, error) { return "done", nil }
	expect := func(err error, target error) {
		t.Helper()
		if target == nil && err != nil || target != nil && !errors.Is(err, target) {
			t.Fatalf("got %v, want %v", err, target)
		}
	}

	// executed, replayed, conflict, invalid, handler_error.
	_, err = idem.Do(ctx, g, req(opCreate, "mix-key-create-0001", `{"budget":5}`), ok)
	expect(err, nil)
	res, err := idem.Do(ctx, g, req(opCreate, "mix-key-create-0001", `{"budget":5}`), ok)
	expect(err, nil)
	if !res.Replayed {
		t.Fatal("the retry was not replayed")
	}
	_, err = idem.Do(ctx, g, req(opCreate, "mix-key-create-0001", `{"budget":6}`), ok)
	expect(err, idem.ErrConflict)
	_, err = idem.Do(ctx, g, req(opCreate, "short", `{}`), ok)
	expect(err, idem.ErrInvalidKey)
	errHandler := errors.New("inventory unavailable")
	_, err = idem.Do(ctx, g, req(opCreate, "mix-key-create-0002", `{}`), func(context.Context) (string, error) { return "", errHandler })
	expect(err, errHandler)

	// in_flight: a duplicate of a running call, under RejectInFlight. The
	// running call's handler starts a span of its own.
	running, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := idem.Do(ctx, g, req(opCreate, "mix-key-create-0003", `{}`), func(ctx context.Context) (string, error) {
			_, span := tp.Tracer("handler").Start(ctx, handlerSpan)
			defer span.End()
			close(running)
			<-release
			return "booked", nil
		})
		first <- err
	}()
	<-running
	_, err = idem.Do(ctx, g, req(opCreate, "mix-key-create-0003", `{}`), ok)
	expect(err, idem.ErrInFlight)
	close(release)
	expect(<-first, nil)

	// rate_limited: the three new keys are spent; canceled; storage_error.
	_, err = idem.Do(ctx, g, req(opCreate, "mix-key-create-0004", `{}`), ok)
	expect(err, idem.ErrRateLimited)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = idem.Do(cctx, g, req(opCreate, "mix-key-create-0005", `{}`), ok)
	expect(err, context.Canceled)
	_, err = idem.Do(ctx, g, req(opCreate, "mix-key-storage-down", `{}`), ok)
	expect(err, idem.ErrStorage)

	// A duplicate that waits for a running call, then replays its answer.
	running, release = make(chan struct{}), make(chan struct{})
	go func() {
		_, err := idem.Do(ctx, w, req(opUpdate, "mix-key-update-0001", `{}`), func(context.Context) (string, error) {
			close(running)
			<-release
			return "updated", nil
		})
		first <- err
	}()
	<-running
	dup := make(chan error, 1)
	go func() {
		res, err := idem.Do(ctx, w, req(opUpdate, "mix-key-update-0001", `{}`), ok)
		if err == nil && !res.Replayed {
			err = errors.New("the waiting duplicate was not replayed")
		}
		dup <- err
	}()
	<-b.held // the duplicate found the key held: it is waiting now
	close(release)
	expect(<-first, nil)
	expect(<-dup, nil)

	// expired: past the TTL (24 h) and the clock skew, within the tombstone
	// retention (24 h).
	clk.advance(25 * time.Hour)
	_, err = idem.Do(ctx, g, req(opCreate, "mix-key-create-0001", `{"budget":5}`), ok)
	expect(err, idem.ErrExpired)

	// Past the retention: the sweep deletes the three stored answers, two
	// per batch.
	clk.advance(24 * time.Hour)
	if n, err := g.Sweep(ctx); err != nil || n != mixSwept {
		t.Fatalf("Sweep = %d, %v; want %d", n, err, mixSwept)
	}
}

// clock is a settable idem.Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// probe is a backend that fails every claim of failKey and tells held
// (without blocking) when a claim of waitKey finds it held by a running
// request: from then on, a Guard under WaitThenReplay is waiting.
type probe struct {
	backend.Backend
	failKey, waitKey string
	held             chan struct{}
}

func (p *probe) Claim(ctx context.Context, c backend.Claim) (*backend.Entry, error) {
	if c.Ref.Key == p.failKey {
		return nil, errors.New("connection refused")
	}
	e, err := p.Backend.Claim(ctx, c)
	if e != nil && e.Response == nil && c.Ref.Key == p.waitKey {
		select {
		case p.held <- struct{}{}:
		default:
		}
	}
	return e, err
}
