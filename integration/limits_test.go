package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemtest"
	"github.com/adcp-go/idempotency/redisstore"
)

// The cluster-wide limiters: two replicas (two limiters, two Stores) share
// one budget per (principal, account) and kind; reads and writes apart;
// RATE_LIMITED carries a retry hint, stores nothing, and a retry after the
// wait runs.
func TestSharedLimiters(t *testing.T) {
	t.Parallel()
	limits := idem.Limits{Writes: idem.Rate{PerSecond: 5, Burst: 2}, Reads: idem.Rate{PerSecond: 5, Burst: 1}}
	pool := newSchema(t)
	clock := idemtest.NewClock(time.Now())
	prefix := "limits-" + randomID(6) // one budget store for both replicas
	for name, newLimiter := range map[string]func(t *testing.T) idem.Limiter{
		"postgres": func(*testing.T) idem.Limiter { return idem.NewPostgresLimiter(pool, limits, clock.Now) },
		"redis": func(t *testing.T) idem.Limiter {
			needRedis(t)
			l, err := redisstore.NewLimiter(newRedisClient(t, redisURL, nil), prefix, limits)
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a, b := newLimiter(t), newLimiter(t)
			alice := idem.Budget{Principal: "alice-" + name, Account: "acct_1"}
			for i, l := range []idem.Limiter{a, b} { // the burst of 2, one from each replica
				if ok, _, err := l.Allow(ctx, alice); !ok || err != nil {
					t.Fatalf("write %d: %v, %v", i+1, ok, err)
				}
			}
			ok, wait, err := a.Allow(ctx, alice)
			if ok || err != nil || wait <= 0 || wait > time.Second {
				t.Fatalf("third write across replicas: %v, %v, %v; want denied with a wait of at most 1 s", ok, wait, err)
			}
			if ok, _, _ := b.Allow(ctx, idem.Budget{Principal: alice.Principal, Account: "acct_2"}); !ok {
				t.Fatal("another account's write budget was spent")
			}
			read := alice
			read.Read = true
			if ok, _, _ := b.Allow(ctx, read); !ok {
				t.Fatal("the read budget was spent by writes")
			}
			if ok, _, _ := a.Allow(ctx, read); ok {
				t.Fatal("the read budget (burst 1) allowed a second read")
			}
			// Through a Store: denied, nothing stored, then it runs after the wait.
			s := newStore(t, &idem.Config{Limiter: a, Now: clock.Now})
			key := newKey()
			_, err = idem.RunInTx(ctx, s, pool, idem.Request{Principal: alice.Principal, Account: alice.Account, Key: key,
				Operation: "create_media_buy", Payload: []byte(payload)}, createBuy(alice.Principal, 1))
			var e *idem.Error
			if !errors.Is(err, idem.ErrRateLimited) || !errors.As(err, &e) || idem.Wire(err).RetryAfter < 1 {
				t.Fatalf("RunInTx over the shared budget: %v, want RATE_LIMITED with retry_after", err)
			}
			if n := count(t, pool, `SELECT count(*) FROM idempotency_keys WHERE key = $1`, key); n != 0 {
				t.Fatal("a rate-limited request was stored")
			}
			if name == "postgres" {
				clock.Advance(e.RetryAfter)
			} else {
				time.Sleep(e.RetryAfter)
			}
			if _, err := idem.RunInTx(ctx, s, pool, idem.Request{Principal: alice.Principal, Account: alice.Account, Key: key,
				Operation: "create_media_buy", Payload: []byte(payload)}, createBuy(alice.Principal, 1)); err != nil {
				t.Fatalf("after the wait: %v, want it to run", err)
			}
		})
	}
}
