package idemtest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/adcp-go/idempotency/idem/backend"
)

// Clock is a test clock for idem.Config.Now: it stands still until told to
// move. The zero value is not usable; create one with [NewClock]. It is safe
// for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at t, truncated to the millisecond (every backend
// keeps milliseconds).
func NewClock(t time.Time) *Clock { return &Clock{t: t.UTC().Truncate(time.Millisecond)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// CountingBackend wraps a Backend and counts the calls that reach it, for
// tests that must prove a request never got that far.
type CountingBackend struct {
	backend.Backend
	Claims, Renewals, Completions, Releases atomic.Int64
}

// Calls is the number of calls that changed or could change state.
func (b *CountingBackend) Calls() int64 {
	return b.Claims.Load() + b.Renewals.Load() + b.Completions.Load() + b.Releases.Load()
}

// Claim counts and forwards.
func (b *CountingBackend) Claim(ctx context.Context, c backend.Claim) (*backend.Entry, error) {
	b.Claims.Add(1)
	return b.Backend.Claim(ctx, c)
}

// Renew counts and forwards.
func (b *CountingBackend) Renew(ctx context.Context, r backend.Renewal) error {
	b.Renewals.Add(1)
	return b.Backend.Renew(ctx, r)
}

// Complete counts and forwards.
func (b *CountingBackend) Complete(ctx context.Context, c backend.Completion) error {
	b.Completions.Add(1)
	return b.Backend.Complete(ctx, c)
}

// Release counts and forwards.
func (b *CountingBackend) Release(ctx context.Context, ref backend.Ref, owner string) error {
	b.Releases.Add(1)
	return b.Backend.Release(ctx, ref, owner)
}
