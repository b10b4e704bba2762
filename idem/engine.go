package idem

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/adcp-go/idempotency/idem/backend"
)

// This file is the engine that every path shares ([RunInTx] and [Do] on any
// backend): how a held key is answered, the rate limit on new keys, owner
// tokens, and the in-process turns on one key.

// Result is the outcome of an idempotent call.
type Result[T any] struct {
	// Value is the handler's value, or on a replay the stored one decoded.
	Value T
	// Replayed reports that the value is the stored answer of an earlier
	// request with the same key, and that the handler did not run.
	Replayed bool
	// Response is the stored JSON encoding of Value: on a replay, byte for
	// byte what the first request stored. It may share memory with the
	// backend: do not modify it.
	Response json.RawMessage
}

// replayOrReject answers a request whose key is held by entry e.
func replayOrReject[T any](cfg settings, p prepared, e *backend.Entry) (Result[T], error) {
	var res Result[T]
	st := cfg.classify(e)
	if st == stateExpired {
		// Past the window the stored request no longer counts: whatever the
		// payload, the answer is that the key expired.
		return res, newError(ErrExpired, fmt.Sprintf("idempotency_key is past the replay window (%ds); if the original request may have succeeded, look the resource up before retrying with a fresh key", int(cfg.ttl/time.Second)))
	}
	if e.Operation != p.Operation || e.Hash != p.hash {
		// Checked before waiting: a duplicate with a different payload never
		// waits, and never learns more than this.
		return res, newError(ErrConflict, "idempotency_key was already used with a different request; use a fresh key, or resend the original request to get its answer")
	}
	if st != stateCompleted {
		return res, cfg.inFlight(e)
	}
	stored, err := cfg.open(p, e.Response)
	if err != nil {
		return res, err
	}
	if err := markerError(stored); err != nil {
		return res, err
	}
	v, err := decodeValue[T](stored)
	if err != nil {
		return res, err
	}
	res.Value = v
	res.Replayed, res.Response = true, stored
	return res, nil
}

// inFlight is the IDEMPOTENCY_IN_FLIGHT answer for a key held by e (nil
// when the holder is not visible, as when a database wait ran out). Its
// retry_after is what is left of the holder's claim, at least a second and
// never past the in-flight bound (which AdCP also caps at the replay TTL
// and at 3600 s on the wire).
func (s settings) inFlight(e *backend.Entry) *Error {
	return inFlightAfter(e, s.inFlightMax)
}

// inFlightAfter is inFlight for a bound of max.
func inFlightAfter(e *backend.Entry, bound time.Duration) *Error {
	err := newError(ErrInFlight, "a request with this idempotency_key is still being processed; retry with the same key after retry_after seconds")
	err.RetryAfter = time.Second
	if e != nil && e.Response == nil {
		err.RetryAfter = e.ExpiresAt.Sub(e.Now)
	}
	err.RetryAfter = min(max(err.RetryAfter, time.Second), bound)
	return err
}

func allowNewKey(ctx context.Context, l Limiter, p prepared) error {
	ok, after, err := l.Allow(ctx, Budget{Principal: p.Principal, Account: p.Account, Read: p.Read})
	if err != nil {
		// A limiter that cannot answer never lets the request through.
		return backendError(ctx, "rate limiter", err)
	}
	if !ok {
		e := newError(ErrRateLimited, "too many new idempotency keys from this caller; retry later")
		e.RetryAfter = after
		return e
	}
	return nil
}

// newOwnerToken returns a token unique to one request: 128 random bits
// (from the runtime's ChaCha8 generator; the token never leaves the server,
// so it needs uniqueness, not secrecy), in hex, in a single allocation.
func newOwnerToken() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	var h [32]byte
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// turns makes the requests for one key in this process take turns: while
// one runs, the others wait in memory, not on a database connection each.
// Without it, a flood of duplicates of one key holds one pooled connection
// per duplicate for up to WaitLimit and starves every other caller of the
// pool. The database still serialises requests from different processes.
// The zero value is ready to use.
type turns struct {
	seed   maphash.Seed
	once   sync.Once
	shards [32]turnShard
}

type turnShard struct {
	mu      sync.Mutex
	running map[backend.Ref]chan struct{} // closed when the running request leaves
}

// take waits until no other request of this process holds ref, for at most
// wait (not at all under RejectInFlight), and then holds it until leave is
// called. Past the wait the key is in flight. waited is the time spent
// waiting, zero when no other request held ref.
func (t *turns) take(ctx context.Context, ref backend.Ref, wait, bound time.Duration, reject bool) (leave func(), waited time.Duration, err error) {
	t.once.Do(func() { t.seed = maphash.MakeSeed() })
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(ref.Principal)
	h.WriteByte(0)
	h.WriteString(ref.Key)
	sh := &t.shards[h.Sum64()%uint64(len(t.shards))]

	var timer *time.Timer
	var start time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if !start.IsZero() {
			waited = time.Since(start)
		}
	}()
	for {
		sh.mu.Lock()
		busy := sh.running[ref]
		if busy == nil {
			if sh.running == nil {
				sh.running = make(map[backend.Ref]chan struct{})
			}
			done := make(chan struct{})
			sh.running[ref] = done
			sh.mu.Unlock()
			return func() {
				sh.mu.Lock()
				delete(sh.running, ref)
				sh.mu.Unlock()
				close(done)
			}, 0, nil
		}
		sh.mu.Unlock()
		if reject {
			return nil, 0, inFlightAfter(nil, bound)
		}
		if timer == nil {
			start = time.Now()
			timer = time.NewTimer(wait)
		}
		select {
		case <-busy:
		case <-timer.C:
			return nil, 0, inFlightAfter(nil, bound)
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("idem: waiting for a concurrent request: %w", ctx.Err())
		}
	}
}
