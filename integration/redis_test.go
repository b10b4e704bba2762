package integration

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dockerclient "github.com/moby/moby/client"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/adcp-go/idempotency/idemtest"
	"github.com/adcp-go/idempotency/redisstore"
)

// redisURL is the Redis every test shares (each with key prefixes of its
// own); empty when TestMain could not start one. Tests that stop or
// reconfigure Redis start a server of their own (scratchRedis).
var redisURL string

// startRedis starts the shared Redis container, once, from TestMain.
func startRedis(ctx context.Context) (string, func(), error) {
	c, url, err := runRedis(ctx)
	return url, func() { stopContainer(c, "Redis") }, err
}

// needRedis skips t, loudly, when TestMain found no Redis (which fails the
// run instead under IDEM_REQUIRE_DOCKER=1).
func needRedis(t *testing.T) {
	t.Helper()
	if redisURL == "" {
		t.Skip("no Redis: see the integration: SKIP line of TestMain")
	}
}

// newRedisClient connects to url; tweak, if not nil, adjusts the options.
func newRedisClient(t *testing.T, url string, tweak func(*redis.Options)) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opts.ContextTimeoutEnabled = true
	if tweak != nil {
		tweak(opts)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newRedisStore(t *testing.T, client redis.UniversalClient, prefix string) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(context.Background(), client, &redisstore.Options{Prefix: prefix, RequireNoEviction: true})
	if err != nil {
		t.Fatalf("redisstore.New: %v", err)
	}
	return s
}

// The shared backend conformance suite against Redis, each subtest under a
// key prefix of its own.
func TestRedisConformance(t *testing.T) {
	needRedis(t)
	t.Parallel()
	client := newRedisClient(t, redisURL, nil)
	idemtest.Run(t, func(t *testing.T) idemtest.Harness {
		return idemtest.Harness{Backend: newRedisStore(t, client, "conf-"+randomID(6))}
	})
}

// The stored layout: one hash per entry under the documented key, with a
// Redis TTL of lease + retention while in flight and TTL + retention once
// completed; and Redis deletes an entry by itself when that TTL ends.
func TestRedisEntryLayoutAndNativeExpiry(t *testing.T) {
	needRedis(t)
	t.Parallel()
	ctx := context.Background()
	client := newRedisClient(t, redisURL, nil)
	prefix := "layout-" + randomID(6)
	s := newRedisStore(t, client, prefix)

	const lease, ttl, retention = 2 * time.Minute, time.Hour, 24 * time.Hour
	hash, _ := idem.CanonicalJSONSHA256([]byte(`{"budget":1}`))
	principal := "tenant:{a}" // ':' and braces are fine in a principal
	ref := backend.Ref{Principal: principal, Key: newKey()}
	key := prefix + ":{" + base64.RawURLEncoding.EncodeToString([]byte(principal)) + ":" + ref.Key + "}"

	claim := backend.Claim{Ref: ref, Operation: "create_media_buy", Hash: hash, Owner: "owner-1", Lease: lease, Retention: retention}
	if held, err := s.Claim(ctx, claim); held != nil || err != nil {
		t.Fatalf("Claim = %+v, %v", held, err)
	}
	fields, err := client.HGetAll(ctx, key).Result()
	if err != nil || fields["op"] != "create_media_buy" || fields["owner"] != "owner-1" || fields["exp"] == "" || len(fields["hash"]) != 64 {
		t.Fatalf("in-flight entry at %q = %v, %v", key, fields, err)
	}
	if _, ok := fields["resp"]; ok {
		t.Fatalf("in-flight entry has a response: %v", fields)
	}
	if d := client.PTTL(ctx, key).Val(); d <= lease+retention-time.Minute || d > lease+retention {
		t.Fatalf("in-flight entry's Redis TTL is %v, want lease + retention (%v)", d, lease+retention)
	}

	if err := s.Complete(ctx, backend.Completion{Ref: ref, Owner: "owner-1", Response: []byte(`{"media_buy_id":"mb_1"}`), TTL: ttl, Retention: retention}); err != nil {
		t.Fatal(err)
	}
	if resp := client.HGet(ctx, key, "resp").Val(); resp != `{"media_buy_id":"mb_1"}` {
		t.Fatalf("stored response %q", resp)
	}
	if d := client.PTTL(ctx, key).Val(); d <= ttl+retention-time.Minute || d > ttl+retention {
		t.Fatalf("completed entry's Redis TTL is %v, want TTL + retention (%v)", d, ttl+retention)
	}

	// A short lease and retention: Redis deletes the abandoned claim by
	// itself, with nothing but its own expiry (no Sweep, no test clock).
	short := backend.Ref{Principal: principal, Key: newKey()}
	claim.Ref, claim.Lease, claim.Retention = short, 20*time.Millisecond, 20*time.Millisecond
	if held, err := s.Claim(ctx, claim); held != nil || err != nil {
		t.Fatalf("Claim = %+v, %v", held, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		e, err := s.Get(ctx, short, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis never expired the abandoned claim: %+v", e)
		}
	}
}

// go-redis resends a command whose reply was lost; a claim or completion
// resent by its owner recognises its own effect instead of finding the key
// held by someone else. Anyone else still cannot touch the entry.
func TestRedisResentStepsAreRecognised(t *testing.T) {
	needRedis(t)
	t.Parallel()
	ctx := context.Background()
	s := newRedisStore(t, newRedisClient(t, redisURL, nil), "resent-"+randomID(6))
	hash, _ := idem.CanonicalJSONSHA256([]byte(`{}`))
	ref := backend.Ref{Principal: "alice", Key: newKey()}
	claim := backend.Claim{Ref: ref, Operation: "create_media_buy", Hash: hash, Owner: "owner-1", Lease: time.Minute, Retention: time.Hour}
	for i := range 2 {
		if held, err := s.Claim(ctx, claim); held != nil || err != nil {
			t.Fatalf("claim #%d by the owner = %+v, %v; want the claim", i+1, held, err)
		}
	}
	claim.Owner = "owner-2"
	if held, err := s.Claim(ctx, claim); held == nil || err != nil {
		t.Fatalf("claim by another owner = %+v, %v; want the holder", held, err)
	}
	done := backend.Completion{Ref: ref, Owner: "owner-1", Response: []byte(`"answer"`), TTL: time.Hour, Retention: time.Hour}
	for i := range 2 {
		if err := s.Complete(ctx, done); err != nil {
			t.Fatalf("completion #%d by the owner: %v", i+1, err)
		}
	}
	other := done
	other.Response = []byte(`"another answer"`)
	if err := s.Complete(ctx, other); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("a completion with another answer: %v, want ErrNotOwner", err)
	}
	other = done
	other.Owner = "owner-2"
	if err := s.Complete(ctx, other); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("a completion by another owner: %v, want ErrNotOwner", err)
	}
	if e, err := s.Get(ctx, ref, time.Time{}); err != nil || e == nil || string(e.Response) != `"answer"` {
		t.Fatalf("entry = %+v, %v; want the owner's answer", e, err)
	}
}

// Sweep deletes only its own store's entries, even when another store's on
// the same Redis are just as old.
func TestRedisSweepKeepsToItsPrefix(t *testing.T) {
	needRedis(t)
	t.Parallel()
	ctx := context.Background()
	client := newRedisClient(t, redisURL, nil)
	a := newRedisStore(t, client, "sweep-"+randomID(6))
	b := newRedisStore(t, client, "sweep-"+randomID(6))
	hash, _ := idem.CanonicalJSONSHA256([]byte(`{}`))
	var refs []backend.Ref
	for range 3 {
		ref := backend.Ref{Principal: "alice", Key: newKey()}
		refs = append(refs, ref)
		for _, s := range []*redisstore.Store{a, b} {
			if held, err := s.Claim(ctx, backend.Claim{Ref: ref, Hash: hash, Owner: "o", Lease: time.Minute, Retention: time.Hour}); held != nil || err != nil {
				t.Fatal(held, err)
			}
			if err := s.Complete(ctx, backend.Completion{Ref: ref, Owner: "o", Response: []byte(`1`), TTL: time.Hour, Retention: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
	}
	later := time.Now().Add(2*time.Hour + time.Second) // past TTL + retention
	if n, err := a.Sweep(ctx, backend.SweepRequest{Retention: time.Hour, Limit: 100, At: later}); err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want its 3 entries deleted", n, err)
	}
	for _, ref := range refs {
		if e, err := a.Get(ctx, ref, later); e != nil || err != nil {
			t.Fatalf("swept store still has %+v, %v", e, err)
		}
		if e, err := b.Get(ctx, ref, later); e == nil || err != nil {
			t.Fatalf("the other store lost its entry: %+v, %v", e, err)
		}
	}
}

// New reads maxmemory-policy: any policy but noeviction is refused under
// RequireNoEviction and logged as a warning otherwise; a policy New may not
// read (CONFIG not permitted, as on managed Redis) is logged as unchecked.
func TestRedisMaxmemoryPolicyCheck(t *testing.T) {
	t.Parallel()
	_, url := scratchRedis(t)
	ctx := context.Background()
	admin := newRedisClient(t, url, nil)
	var logs syncBuffer
	opts := &redisstore.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}

	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	for _, require := range []bool{false, true} {
		opts.RequireNoEviction = require
		if _, err := redisstore.New(ctx, admin, opts); err != nil {
			t.Fatalf("noeviction, RequireNoEviction %v: %v", require, err)
		}
	}
	if logs.String() != "" {
		t.Fatalf("noeviction logged %q", logs.String())
	}

	if err := admin.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	opts.RequireNoEviction = true
	if _, err := redisstore.New(ctx, admin, opts); err == nil || !strings.Contains(err.Error(), `"allkeys-lru"`) {
		t.Fatalf("allkeys-lru under RequireNoEviction: %v, want New refused", err)
	}
	opts.RequireNoEviction = false
	if _, err := redisstore.New(ctx, admin, opts); err != nil {
		t.Fatalf("allkeys-lru, warning mode: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "maxmemory-policy=allkeys-lru") || !strings.Contains(l, "evict") {
		t.Fatalf("allkeys-lru, warning mode logged %q, want a warning naming the policy", l)
	}
	t.Logf("warning mode: %s", strings.TrimSpace(logs.String()))

	// A user that may not run CONFIG.
	if err := admin.Do(ctx, "ACL", "SETUSER", "app", "on", ">app-secret", "~*", "+@all", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	app := newRedisClient(t, url, func(o *redis.Options) { o.Username, o.Password = "app", "app-secret" })
	logs.Reset()
	opts.RequireNoEviction = true
	if _, err := redisstore.New(ctx, app, opts); err != nil {
		t.Fatalf("CONFIG not permitted: %v, want a warning only", err)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "could not check") {
		t.Fatalf("CONFIG not permitted logged %q, want a could-not-check warning", l)
	}
	t.Logf("CONFIG not permitted: %s", strings.TrimSpace(logs.String()))
}

// The fault test: Redis stops answering (docker pause) in the middle of a
// request. The request fails with a storage error and reports nothing as
// done; once Redis is back the key behaves: a replay of the run that
// happened, or, if the claim is what survived, IDEMPOTENCY_IN_FLIGHT until
// its lease ends and then one fresh run, which further retries replay.
//
// Not parallel, so that nothing else loads the machine while the short
// client timeouts apply; and on a Redis of its own, so that pausing it
// stalls no other test.
func TestRedisUnreachableMidRequest(t *testing.T) {
	c, url := scratchRedis(t)
	ctx := context.Background()
	client := newRedisClient(t, url, func(o *redis.Options) {
		// Short timeouts, no resends: a request against a paused Redis
		// fails in about half a second rather than hanging.
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = time.Second, 500*time.Millisecond, 500*time.Millisecond, time.Second
		o.MaxRetries = -1
	})
	clock := idemtest.NewClock(time.Now().UTC())
	store := newRedisStore(t, client, "fault")
	const lease = 2 * time.Minute
	g, err := idem.NewGuard(store, &idem.Config{Lease: lease, Duplicates: idem.RejectInFlight, Limiter: idem.Unlimited, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}

	docker, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = docker.Close() })
	id := c.GetContainerID()
	paused := false
	pause := func(t *testing.T) {
		t.Helper()
		if _, err := docker.ContainerPause(ctx, id, dockerclient.ContainerPauseOptions{}); err != nil {
			t.Errorf("docker pause: %v", err)
			return
		}
		paused = true
	}
	unpause := func(t *testing.T) {
		t.Helper()
		if !paused {
			return
		}
		if _, err := docker.ContainerUnpause(ctx, id, dockerclient.ContainerUnpauseOptions{}); err != nil {
			t.Fatalf("docker unpause: %v", err)
		}
		paused = false
		for deadline := time.Now().Add(30 * time.Second); client.Ping(ctx).Err() != nil; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("Redis did not answer again after docker unpause")
			}
		}
	}
	t.Cleanup(func() { unpause(t) })

	// retryUntilDone retries req after Redis is back, as a buyer would:
	// either the answer was stored after all (the step reached the paused
	// Redis and only its reply was lost) and the retry replays the run
	// that happened, or the claim holds the key: IN_FLIGHT until its lease
	// ends, then exactly one fresh run. A further retry replays the answer.
	retryUntilDone := func(t *testing.T, req idem.Request, runs *atomic.Int64, ranBefore int64) {
		t.Helper()
		handler := func(context.Context) (buy, error) { return buy{MediaBuyID: runs.Add(1), Budget: 5000}, nil }
		res, err := idem.Do(ctx, g, req, handler)
		switch {
		case err == nil && res.Replayed:
			if ranBefore == 0 || res.Value.MediaBuyID != ranBefore {
				t.Fatalf("replayed %+v, but the runs that happened are 1..%d", res.Value, ranBefore)
			}
			t.Logf("after the outage: the stored answer of run %d is replayed", res.Value.MediaBuyID)
		case err == nil:
			if ranBefore != 0 {
				t.Fatalf("the work ran again at once (%+v) although run %d happened and its claim's lease still runs", res.Value, ranBefore)
			}
			t.Log("after the outage: the claim never reached Redis; the retry runs the work")
		case errors.Is(err, idem.ErrInFlight):
			e, gerr := store.Get(ctx, backend.Ref{Principal: req.Principal, Key: req.Key}, clock.Now())
			if gerr != nil || e == nil || e.Response != nil {
				t.Fatalf("IN_FLIGHT, but the entry is %+v, %v", e, gerr)
			}
			t.Logf("after the outage: the claim holds the key (IN_FLIGHT, retry_after %ds) until its lease ends", idem.Wire(err).RetryAfter)
			clock.Advance(lease + time.Second)
			if res, err = idem.Do(ctx, g, req, handler); err != nil || res.Replayed || res.Value.MediaBuyID != ranBefore+1 {
				t.Fatalf("retry past the lease = %+v, %v; want run %d", res, err, ranBefore+1)
			}
			t.Logf("past the lease: run %d", res.Value.MediaBuyID)
		default:
			t.Fatalf("retry after the outage: %v", err)
		}
		again, err := idem.Do(ctx, g, req, handler)
		if err != nil || !again.Replayed || again.Value != res.Value {
			t.Fatalf("further retry = %+v, %v; want %+v replayed", again, err, res.Value)
		}
	}

	// Redis stops answering while the handler runs: the work is done, but
	// its answer cannot be stored.
	t.Run("DuringTheHandler", func(t *testing.T) {
		var runs atomic.Int64
		req := request("alice", newKey(), payload)
		res, err := idem.Do(ctx, g, req, func(context.Context) (buy, error) {
			pause(t)
			return buy{MediaBuyID: runs.Add(1), Budget: 5000}, nil
		})
		if !errors.Is(err, idem.ErrStorage) || idem.Wire(err).Code != string(idem.CodeServiceUnavailable) {
			t.Fatalf("Do with Redis paused after the handler: %v, want a storage error", err)
		}
		if res.Response != nil || res.Value != (buy{}) || res.Replayed {
			t.Fatalf("a failed request reported a result: %+v", res)
		}
		t.Logf("the request: %v", err)
		// While Redis is away, a retry fails the same way and runs nothing.
		_, err = idem.Do(ctx, g, req, func(context.Context) (buy, error) { return buy{MediaBuyID: runs.Add(1)}, nil })
		if !errors.Is(err, idem.ErrStorage) || runs.Load() != 1 {
			t.Fatalf("retry while Redis is paused: %v after %d runs, want a storage error and no run", err, runs.Load())
		}
		unpause(t)
		retryUntilDone(t, req, &runs, 1)
		if n := runs.Load(); n > 2 {
			t.Fatalf("the work ran %d times", n)
		}
	})

	// Redis stops answering before the claim: nothing runs.
	t.Run("BeforeTheClaim", func(t *testing.T) {
		var runs atomic.Int64
		req := request("bob", newKey(), payload)
		pause(t)
		_, err := idem.Do(ctx, g, req, func(context.Context) (buy, error) { return buy{MediaBuyID: runs.Add(1)}, nil })
		if !errors.Is(err, idem.ErrStorage) || runs.Load() != 0 {
			t.Fatalf("Do with Redis paused: %v after %d runs, want a storage error and no run", err, runs.Load())
		}
		t.Logf("the request: %v", err)
		unpause(t)
		retryUntilDone(t, req, &runs, 0)
		if n := runs.Load(); n != 1 {
			t.Fatalf("the work ran %d times, want once", n)
		}
	})
}
