package idem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Guard runs handlers idempotently on a [Backend]. It is the drop-in layer
// for handlers that do not write through a pgx.Tx: [Do] for one call, [Wrap]
// to decorate a typed handler once. A Guard is safe for concurrent use.
//
// On a Backend the claim and the stored answer are separate steps around the
// handler, not one transaction: if the process dies after the handler's side
// effects but before the answer is stored, the claim stays until its lease
// ends (Config.Lease) and a later retry runs the handler again. Use
// [RunInTx] when the work is in Postgres.
type Guard struct {
	b   Backend
	cfg settings
}

// New returns a Guard over b configured by cfg (nil for the defaults).
func New(b Backend, cfg *Config) (*Guard, error) {
	if b == nil {
		return nil, errors.New("idem: New needs a Backend")
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
		n, err := g.b.Sweep(ctx, g.cfg.retention, g.cfg.sweepBatch)
		total += n
		if err != nil {
			return total, backendError("sweep", err)
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
// If fn returns an error or panics, the claim is released, nothing is
// stored and a retry runs fn again; the error is returned as it is and a
// panic is re-raised. Backend failures match [ErrStorage].
func Do[T any](ctx context.Context, g *Guard, req Request, fn func(ctx context.Context) (T, error)) (res Result[T], err error) {
	defer g.cfg.observeCall(ctx, req.Operation, time.Now(), &res.Replayed, &err)
	p, err := prepare(req, g.cfg.maxPayload)
	if err != nil {
		return res, err
	}
	ref := Ref{p.Principal, p.Key}
	owner := newOwnerToken()
	held, err := g.claim(ctx, p, owner)
	if err != nil {
		return res, err
	}
	if held != nil {
		return replayOrReject[T](g.cfg, p, held)
	}
	if err := allowNewKey(ctx, g.cfg.limiter, p.Principal); err != nil {
		return res, g.release(ctx, ref, owner, err)
	}
	v, err := runOwned(ctx, g, ref, owner, fn)
	if err != nil {
		return res, g.release(ctx, ref, owner, err)
	}
	body, err := encodeValue(v)
	if err != nil {
		return res, g.release(ctx, ref, owner, err)
	}
	// The work is done: storing its answer must not be abandoned because the
	// caller went away.
	cctx := ctx
	if ctx.Done() != nil {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
	}
	err = g.b.Complete(cctx, Completion{Ref: ref, Owner: owner, Response: body, TTL: g.cfg.ttl, Retention: g.cfg.retention})
	if err != nil {
		// The handler's work is done but its answer is not stored. The claim
		// stays: a retry gets IN_FLIGHT until the lease ends rather than
		// running the work again at once.
		if errors.Is(err, ErrNotOwner) {
			err = fmt.Errorf("the lease (%v) ended before the handler finished and another request took the key over: %w", g.cfg.lease, err)
		}
		e := storageError("complete", err)
		e.Message = "the request ran but its answer could not be stored"
		return res, e
	}
	return Result[T]{Value: v, Response: body}, nil
}

// runOwned runs fn while owner holds ref; if fn panics, the claim is
// released before the panic goes on.
func runOwned[T any](ctx context.Context, g *Guard, ref Ref, owner string, fn func(context.Context) (T, error)) (T, error) {
	panicked := true
	defer func() {
		if panicked {
			_ = g.release(ctx, ref, owner, nil)
		}
	}()
	v, err := fn(ctx)
	panicked = false
	return v, err
}

// claim claims the key for owner, waiting for a concurrent equal request
// under WaitThenReplay. It returns (nil, nil) when the key is ours, or the
// entry to answer from.
func (g *Guard) claim(ctx context.Context, p prepared, owner string) (*Entry, error) {
	c := Claim{
		Ref: Ref{p.Principal, p.Key}, Operation: p.Operation, Hash: p.hash,
		Owner: owner, Lease: g.cfg.lease, Retention: g.cfg.retention,
	}
	deadline := time.Now().Add(g.cfg.wait)
	pause := 2 * time.Millisecond
	for {
		held, err := g.b.Claim(ctx, c)
		if err != nil || held == nil {
			return nil, backendError("claim", err)
		}
		conflict := held.Operation != p.Operation || held.Hash != p.hash
		left := time.Until(deadline)
		if conflict || g.cfg.classify(held) != stateInFlight || g.cfg.duplicates == RejectInFlight || left <= 0 {
			return held, nil
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("idem: waiting for a concurrent request: %w", ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// release gives the claim back after a failure (cause, returned as it is)
// so that a retry runs again. If releasing fails, the claim ends with its
// lease; the caller learns both.
func (g *Guard) release(ctx context.Context, ref Ref, owner string, cause error) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := g.b.Release(rctx, ref, owner)
	if err == nil || errors.Is(err, ErrNotOwner) {
		return cause
	}
	if cause == nil {
		return backendError("release", err)
	}
	return fmt.Errorf("%w (releasing the idempotency claim failed too, so the key stays blocked until its lease ends: %v)", cause, err)
}

// backendError keeps this package's errors and context errors as they are
// and marks anything else from a backend as a storage failure.
func backendError(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
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
