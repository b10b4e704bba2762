package idem

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/adcp-go/idempotency/db"
)

// Limiter decides whether a budget may store one more new key. AdCP requires
// sellers to limit idempotency-cache inserts per (authenticated agent,
// account), with separate counters for reads and writes, and to answer
// RATE_LIMITED past the ceiling. It is consulted only for keys that are new
// (never for replays), after the key is claimed and before the handler runs;
// a denied request releases its claim, so nothing is stored, and a retry
// after the wait runs.
//
// Implementations must be safe for concurrent use. NewLimiter counts in this
// process; [NewPostgresLimiter] (and redisstore.NewLimiter) count in storage
// that every replica shares.
type Limiter interface {
	// Allow reports whether the budget named by b may store a new key now
	// and, if not, how long until it may.
	Allow(ctx context.Context, b Budget) (ok bool, retryAfter time.Duration, err error)
}

// Budget names one rate-limit budget: a (principal, account) pair's reads
// or writes.
type Budget struct {
	Principal string
	Account   string
	Read      bool
}

// name is the budget's storage name: its kind, the principal's length, the
// principal and the account, so that no two budgets share a name.
func (b Budget) name() string {
	kind := "w"
	if b.Read {
		kind = "r"
	}
	return kind + ":" + strconv.Itoa(len(b.Principal)) + ":" + b.Principal + b.Account
}

// Rate is a token bucket: PerSecond new keys a second, sustained, with
// bursts of up to Burst.
type Rate struct {
	PerSecond float64
	Burst     int
}

func (r Rate) valid() bool {
	return r.PerSecond > 0 && !math.IsInf(r.PerSecond, 0) && r.Burst >= 1
}

// Limits are the two budgets of a (principal, account).
type Limits struct {
	Writes Rate
	Reads  Rate
}

// DefaultLimits are AdCP 3.2's recommended starting points: writes 60 a
// second with bursts of 300, reads 300 a second with bursts of 1,500. AdCP
// asks sellers not to publish their ceilings and to tune them.
var DefaultLimits = Limits{Writes: Rate{PerSecond: 60, Burst: 300}, Reads: Rate{PerSecond: 300, Burst: 1500}}

func (l Limits) rate(b Budget) Rate {
	if b.Read {
		return l.Reads
	}
	return l.Writes
}

func (l Limits) check(who string) {
	if !l.Writes.valid() || !l.Reads.valid() {
		panic(fmt.Sprintf("idem: %s needs positive finite rates and bursts of at least 1 for reads and writes", who))
	}
}

// Unlimited is a [Limiter] that allows everything.
var Unlimited Limiter = unlimited{}

type unlimited struct{}

// Allow allows every request.
func (unlimited) Allow(context.Context, Budget) (bool, time.Duration, error) { return true, 0, nil }

// tokenBucket is the Limiter of NewLimiter: a token bucket per budget,
// refilled at a steady rate up to a burst size.
type tokenBucket struct {
	limits Limits
	seed   maphash.Seed
	shards [16]bucketShard
	now    func() time.Time
}

type bucketShard struct {
	mu      sync.Mutex
	buckets map[Budget]*bucket
	calls   int
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter returns the default [Limiter]: a token bucket per budget
// (reads and writes of each principal and account apart). It counts in this
// process only, so N replicas behind a load balancer allow up to N times the
// rates; when that matters, use [NewPostgresLimiter] or redisstore's. Budgets
// whose bucket is full again are forgotten, so memory follows the number of
// recently active principals. It is safe for concurrent use, and its Allow
// never returns an error. It panics if a rate or burst is not positive.
func NewLimiter(l Limits) Limiter {
	l.check("NewLimiter")
	t := &tokenBucket{limits: l, seed: maphash.MakeSeed(), now: time.Now}
	for i := range t.shards {
		t.shards[i].buckets = make(map[Budget]*bucket)
	}
	return t
}

// Allow implements [Limiter].
func (l *tokenBucket) Allow(_ context.Context, b Budget) (bool, time.Duration, error) {
	r := l.limits.rate(b)
	sh := &l.shards[maphash.String(l.seed, b.Principal)%uint64(len(l.shards))]
	now := l.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.calls++; sh.calls%1024 == 0 {
		l.forgetFull(sh, now)
	}
	bk := sh.buckets[b]
	if bk == nil {
		bk = &bucket{tokens: float64(r.Burst), last: now}
		sh.buckets[b] = bk
	}
	bk.tokens = min(float64(r.Burst), bk.tokens+now.Sub(bk.last).Seconds()*r.PerSecond)
	bk.last = now
	if bk.tokens >= 1 {
		bk.tokens--
		return true, 0, nil
	}
	wait := time.Duration((1 - bk.tokens) / r.PerSecond * float64(time.Second))
	return false, max(wait, time.Millisecond), nil
}

// forgetFull drops buckets that have refilled completely: they behave exactly
// like a budget never seen.
func (l *tokenBucket) forgetFull(sh *bucketShard, now time.Time) {
	for b, bk := range sh.buckets {
		r := l.limits.rate(b)
		if bk.tokens+now.Sub(bk.last).Seconds()*r.PerSecond >= float64(r.Burst) {
			delete(sh.buckets, b)
		}
	}
}

// PostgresLimiter is a [Limiter] whose buckets live in Postgres (the table
// idempotency_rate_buckets of package migrations), so that every replica
// shares one budget per (principal, account). Each Allow is one statement.
// Create it with [NewPostgresLimiter]; it is safe for concurrent use.
type PostgresLimiter struct {
	db     DB
	limits Limits
	q      db.Queries
	now    func() time.Time
}

// NewPostgresLimiter returns a Limiter on conn (a pool) with the given
// limits. now, if not nil, replaces the database clock, for tests. It panics
// if a rate or burst is not positive.
func NewPostgresLimiter(conn DB, l Limits, now func() time.Time) *PostgresLimiter {
	l.check("NewPostgresLimiter")
	return &PostgresLimiter{db: conn, limits: l, now: now}
}

// Allow implements [Limiter]. A database failure is an error: the request
// is then answered as a storage failure, never let through unlimited.
func (l *PostgresLimiter) Allow(ctx context.Context, b Budget) (bool, time.Duration, error) {
	r := l.limits.rate(b)
	wait, err := l.q.IdempotencyRateTake(ctx, l.db, db.IdempotencyRateTakeParams{
		Bucket: b.name(), Rate: r.PerSecond, Burst: float64(r.Burst), Now: clock(l.now),
	})
	if err != nil {
		return false, 0, dbError(ctx, "rate limit", err)
	}
	if wait <= 0 {
		return true, 0, nil
	}
	return false, max(time.Duration(wait*float64(time.Second)), time.Millisecond), nil
}
