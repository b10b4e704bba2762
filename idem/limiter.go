package idem

import (
	"context"
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// Limiter decides whether a principal may store one more new key. AdCP
// requires sellers to limit the rate of idempotency-cache inserts per agent
// and to answer RATE_LIMITED past it. It is consulted only for keys that are
// new (never for replays), after the key is claimed and before the handler
// runs; a denied request releases its claim, so nothing is stored.
//
// Implementations must be safe for concurrent use. To share one limit across
// a cluster, implement Limiter over shared storage (for example a Redis
// counter).
type Limiter interface {
	// Allow reports whether principal may store a new key now and, if not,
	// how long until it may.
	Allow(ctx context.Context, principal string) (ok bool, retryAfter time.Duration, err error)
}

// Unlimited is a [Limiter] that allows everything.
var Unlimited Limiter = unlimited{}

type unlimited struct{}

// Allow allows every request.
func (unlimited) Allow(context.Context, string) (bool, time.Duration, error) { return true, 0, nil }

// tokenBucket is the Limiter of NewLimiter: a token bucket per principal,
// refilled at a steady rate up to a burst size.
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	seed   maphash.Seed
	shards [16]bucketShard
	now    func() time.Time
}

type bucketShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	calls   int
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter returns the default [Limiter]: a token bucket per principal,
// allowing perSecond new keys a second with bursts of up to burst. It counts
// in this process only, so N replicas behind a load balancer allow up to N
// times the rate; when that matters, share a limiter across the cluster
// instead. Principals whose bucket is full again are forgotten, so memory
// follows the number of recently active principals. It is safe for
// concurrent use, and its Allow never returns an error. AdCP suggests 60
// and 300 as a first ceiling. It panics if perSecond or burst is not
// positive.
func NewLimiter(perSecond float64, burst int) Limiter {
	if !(perSecond > 0) || burst < 1 || math.IsInf(perSecond, 0) {
		panic("idem: NewLimiter needs a positive finite rate and a burst of at least 1")
	}
	l := &tokenBucket{rate: perSecond, burst: float64(burst), seed: maphash.MakeSeed(), now: time.Now}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l
}

// Allow implements [Limiter].
func (l *tokenBucket) Allow(_ context.Context, principal string) (bool, time.Duration, error) {
	sh := &l.shards[maphash.String(l.seed, principal)%uint64(len(l.shards))]
	now := l.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.calls++; sh.calls%1024 == 0 {
		l.forgetFull(sh, now)
	}
	b := sh.buckets[principal]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		sh.buckets[principal] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0, nil
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, max(wait, time.Millisecond), nil
}

// forgetFull drops buckets that have refilled completely: they behave exactly
// like a principal never seen.
func (l *tokenBucket) forgetFull(sh *bucketShard, now time.Time) {
	for p, b := range sh.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(sh.buckets, p)
		}
	}
}
