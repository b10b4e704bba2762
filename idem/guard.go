package idem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/adcp-go/idempotency/idem/backend"
)

// Guard runs handlers idempotently on a [backend.Backend]. It is the drop-in layer
// for handlers that do not write through a pgx.Tx: [Do] for one call, [Wrap]
// to decorate a typed handler once. A Guard is safe for concurrent use.
//
// On a backend.Backend the claim and the stored answer are separate steps around the
// handler, not one transaction: if the process dies after the handler's side
// effects but before the answer is stored, the claim stays until its lease
// ends (Config.Lease) and a later retry runs the handler again. Use
// [RunInTx] when the work is in Postgres.
type Guard struct {
	b   backend.Backend
	cfg settings
}

// NewGuard returns a Guard over b configured by cfg (nil for the
// defaults). It fails if b is nil or the configuration is invalid.
func NewGuard(b backend.Backend, cfg *Config) (*Guard, error) {
	if b == nil {
		return nil, errors.New("idem: NewGuard needs a Backend")
	}
	s, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	return &Guard{b: b, cfg: s}, nil
}

// Capability returns the adcp.idempotency fragment for
// get_adcp_capabilities.
func (g *Guard) Capability() Capability { return g.cfg.capability() }

// Sweep deletes, in batches of Config.SweepBatch, the backend's entries that
// have outlived Config.TombstoneRetention, and reports how many it deleted.
func (g *Guard) Sweep(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := g.b.Sweep(ctx, backend.SweepRequest{Retention: g.cfg.retention, Limit: g.cfg.sweepBatch, At: g.cfg.at()})
		total += n
		g.cfg.swept(ctx, n)
		if err != nil {
			return total, backendError(ctx, "sweep", err)
		}
		if n < g.cfg.sweepBatch {
			return total, nil
		}
	}
}

// Do runs fn at most once per (req.Principal, req.Key) and answers retries
// with the stored result, with the same outcomes as [RunInTx]:
//
//   - a new key: fn runs; the JSON encoding of its value is stored;
//   - the same key and an equal payload: the stored value, with Replayed;
//   - the same key with another payload or operation: [ErrConflict], at
//     once, even while the first request still runs;
//   - past the TTL: [ErrExpired] while the tombstone is kept;
//   - while an equal request still runs: under [WaitThenReplay] Do waits
//     up to Config.WaitLimit for its answer, then gives [ErrInFlight] with
//     a retry hint; under [RejectInFlight] it gives [ErrInFlight] at once;
//   - a principal over its insert rate: [ErrRateLimited].
//
// A context that has already ended is refused before anything is claimed.
// While fn runs, Do renews the claim's lease every Config.Lease/3, so a
// handler slower than the lease keeps its key; fn's context is cancelled
// (with cause [ErrLeaseLost]) if the backend reports the claim taken over.
//
// If fn returns an error or panics, the claim is released, nothing is
// stored and a retry runs fn again; the error is returned as it is and a
// panic is re-raised. If fn succeeds but its value cannot be encoded as
// JSON (or fn returns an error matching [ErrUnencodable]), the work is done
// and must not run again: the key is kept with a marker, and this call and
// every retry get [ErrUnencodable]. backend.Backend failures match [ErrStorage].
func Do[T any](ctx context.Context, g *Guard, req Request, fn func(ctx context.Context) (T, error)) (res Result[T], err error) {
	ctx, obs := g.cfg.begin(ctx, req.Operation)
	defer obs.end(ctx, &res.Replayed, &err)
	p, err := prepare(req, g.cfg.maxPayload)
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		// Refused before claiming: nothing runs with a dead context and
		// nothing is left to block the key.
		return res, fmt.Errorf("idem: %w", err)
	}
	ref := p.ref()
	owner := newOwnerToken()
	held, err := g.claim(ctx, p, owner, &obs.waited)
	if err != nil {
		return res, err
	}
	if held != nil {
		return replayOrReject[T](g.cfg, p, held)
	}
	if err := allowNewKey(ctx, g.cfg.limiter, p); err != nil {
		return res, g.release(ctx, ref, owner, err)
	}
	v, err := runOwned(ctx, g, ref, owner, fn)
	var body []byte
	if err == nil {
		body, err = encodeValue(v)
	}
	if err != nil && !errors.Is(err, ErrUnencodable) {
		return res, g.release(ctx, ref, owner, err)
	}
	if err != nil {
		// The work is done but has no answer to store: keep the key with a
		// marker, so that no retry runs it again.
		body = markerUnencodable
	}
	// The work is done: storing its answer must not be abandoned because the
	// caller went away.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	stored, cerr := g.cfg.seal(p, body)
	if cerr == nil {
		cerr = g.b.Complete(cctx, backend.Completion{Ref: ref, Owner: owner, Response: stored, TTL: g.cfg.ttl, Retention: g.cfg.retention, At: g.cfg.at()})
	}
	if cerr != nil {
		// The handler's work is done but its answer is not stored. The claim
		// stays: a retry gets IN_FLIGHT until the lease ends rather than
		// running the work again at once.
		if errors.Is(cerr, backend.ErrNotOwner) {
			cerr = fmt.Errorf("%w: the lease (%v) was not renewed in time and another request took the key over: %w", ErrLeaseLost, g.cfg.lease, cerr)
		}
		e := storageError("complete", cerr)
		e.Message = "the request ran but its answer could not be stored"
		return res, e
	}
	if err != nil {
		var ie *Error
		if !errors.As(err, &ie) || ie.kind != ErrUnencodable {
			err = unencodable(err) // a handler's own error matching ErrUnencodable
		}
		return res, err
	}
	return Result[T]{Value: v, Response: body}, nil
}

// runOwned runs fn while owner holds ref, renewing the lease until fn
// returns, and never past the in-flight bound: fn's context ends there (with
// cause ErrHandlerTimeout) and the lease is not renewed beyond it. If fn
// panics, the claim is released before the panic goes on.
func runOwned[T any](ctx context.Context, g *Guard, ref backend.Ref, owner string, fn func(context.Context) (T, error)) (T, error) {
	bound := time.Now().Add(g.cfg.inFlightMax)
	hctx, cancelTimeout := context.WithDeadlineCause(ctx, bound, ErrHandlerTimeout)
	defer cancelTimeout()
	hctx, cancel := context.WithCancelCause(hctx)
	defer cancel(nil)
	stop := g.keepAlive(ctx, ref, owner, bound, cancel)
	panicked := true
	defer func() {
		if panicked {
			stop()
			_ = g.release(ctx, ref, owner, nil)
		}
	}()
	v, err := fn(hctx)
	panicked = false
	stop()
	return v, err
}

// keepAlive renews owner's lease on ref every Lease/3 until the returned
// stop is called (which waits for it to finish), never past bound. If the
// backend answers that the claim is no longer owner's, it cancels the
// handler with ErrLeaseLost. It runs on a context of its own: a handler
// that goes on after its caller's context ended must keep its key as long
// as it runs (within the bound).
func (g *Guard) keepAlive(ctx context.Context, ref backend.Ref, owner string, bound time.Time, lost context.CancelCauseFunc) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	bctx := context.WithoutCancel(ctx)
	wg.Go(func() {
		t := time.NewTicker(g.cfg.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			lease := min(g.cfg.lease, time.Until(bound))
			if lease < time.Millisecond {
				return // the in-flight bound: the claim ends with its lease
			}
			rctx, cancel := context.WithTimeout(bctx, g.cfg.lease/3)
			err := g.b.Renew(rctx, backend.Renewal{Ref: ref, Owner: owner, Lease: lease, Retention: g.cfg.retention, At: g.cfg.at()})
			cancel()
			if errors.Is(err, backend.ErrNotOwner) {
				lost(ErrLeaseLost)
				return
			}
			// Any other failure: try again at the next tick. If the backend
			// stays unreachable past the lease, Complete finds out whether
			// the key was taken over.
		}
	})
	return func() {
		select {
		case <-quit:
		default:
			close(quit)
		}
		wg.Wait()
	}
}

// claim claims the key for owner, waiting for a concurrent equal request
// under WaitThenReplay. It returns (nil, nil) when the key is ours, or the
// entry to answer from.
func (g *Guard) claim(ctx context.Context, p prepared, owner string, waited *time.Duration) (*backend.Entry, error) {
	deadline := time.Now().Add(g.cfg.wait)
	pause := 2 * time.Millisecond
	for {
		wait := time.Until(deadline)
		if g.cfg.duplicates == RejectInFlight {
			wait = 0
		}
		held, err := g.b.Claim(ctx, backend.Claim{
			Ref: p.ref(), Operation: p.Operation, Hash: p.hash,
			Owner: owner, Lease: g.cfg.lease, Retention: g.cfg.retention,
			Wait: wait, At: g.cfg.at(),
		})
		if err != nil || held == nil {
			return nil, backendError(ctx, "claim", err)
		}
		conflict := held.Operation != p.Operation || held.Hash != p.hash
		left := time.Until(deadline)
		if conflict || g.cfg.classify(held) != stateInFlight || g.cfg.duplicates == RejectInFlight || left <= 0 {
			return held, nil
		}
		t := time.NewTimer(min(pause, left))
		slept := time.Now()
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("idem: waiting for a concurrent request: %w", ctx.Err())
		case <-t.C:
		}
		*waited += time.Since(slept)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// release gives the claim back after a failure (cause, returned as it is)
// so that a retry runs again. If releasing fails, the claim ends with its
// lease; the caller learns both.
func (g *Guard) release(ctx context.Context, ref backend.Ref, owner string, cause error) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := g.b.Release(rctx, ref, owner)
	if err == nil || errors.Is(err, backend.ErrNotOwner) {
		return cause
	}
	if cause == nil {
		return backendError(rctx, "release", err)
	}
	return fmt.Errorf("%w (releasing the idempotency claim failed too, so the key stays blocked until its lease ends: %v)", cause, err)
}

// backendError keeps this package's errors as they are, and ctx's own end
// (the caller gave up), and marks anything else from a backend as a
// storage failure: a network timeout also matches
// context.DeadlineExceeded, but it is the storage's failure, not the
// caller's deadline.
func backendError(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) || (ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))) {
		return err
	}
	return storageError(op, err)
}

// Keyed is a request that carries its idempotency key, for [Wrap].
type Keyed interface {
	IdempotencyKey() string
}

// Wrap turns a typed handler into an idempotent one on g. The returned
// function takes the key from the request (IdempotencyKey), the principal
// from the context ([WithPrincipal]) and hashes the request's JSON encoding
// as the payload, under operation; then it behaves as [Do].
func Wrap[Req Keyed, Resp any](g *Guard, operation string, fn func(context.Context, Req) (Resp, error)) func(context.Context, Req) (Result[Resp], error) {
	return func(ctx context.Context, r Req) (Result[Resp], error) {
		payload, err := json.Marshal(r)
		if err != nil {
			e := newError(ErrInvalidPayload, "the request cannot be encoded as JSON")
			e.cause = err
			return Result[Resp]{}, e
		}
		return Do(ctx, g, Request{
			Principal: PrincipalFrom(ctx), Key: r.IdempotencyKey(), Operation: operation, Payload: payload,
		}, func(ctx context.Context) (Resp, error) { return fn(ctx, r) })
	}
}

type principalKey struct{}

// WithPrincipal returns a context carrying the authenticated principal, for
// [Wrap]. Set it in the authentication middleware, from verified
// credentials only.
func WithPrincipal(ctx context.Context, principal string) context.Context {
	return context.WithValue(ctx, principalKey{}, principal)
}

// PrincipalFrom returns the principal set by [WithPrincipal], or "".
func PrincipalFrom(ctx context.Context) string {
	p, _ := ctx.Value(principalKey{}).(string)
	return p
}
