package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
)

// Redis Sentinel, real (issue 18, item 4b): a primary, one replica and
// three sentinels, all redis-server processes; redisstore on a go-redis
// FailoverClient. Pairs of callers send the same new key at once, over and
// over, while the primary is killed with SIGKILL and the sentinels promote
// the replica. Redis replicates asynchronously, so whatever the primary
// acknowledged and had not sent to the replica is gone after the promotion:
// a lost claim or a lost answer turns a retry into a second execution. The
// test measures that window rather than asserting it away.
//
// The replica replicates through a link (see link) that the test stalls
// for a while before the kill, the way a partition or a lagging replica
// does, and cuts at the kill, so the window is as wide as the stall. Once
// the sentinels have promoted the replica, a fresh replica joins it (an
// operator replacing the dead node; without one, min-replicas and WAIT
// would refuse every write). Four configurations:
//
//	async-no-stall  the loopback's own window
//	async           the stall, nothing else
//	min-replicas    the primary refuses writes once its replica has not
//	                acknowledged for more than a second
//	                (min-replicas-to-write 1, min-replicas-max-lag 1)
//	wait            every step of the store is followed by WAIT 1 500 on
//	                its connection (waitForReplica, a go-redis hook: no
//	                change to redisstore), and a step no replica
//	                acknowledged is an error
//
// Asserted, in every configuration: every caller gets an answer, every
// error on the way is a clear one (ErrStorage: SERVICE_UNAVAILABLE, or
// IDEMPOTENCY_IN_FLIGHT), and every answer is the answer of one of the
// key's own executions. Under WAIT, moreover: no answer a caller got as
// executed is lost, and no handler runs without finding its claim in
// Redis. (WAIT guards what a writer acknowledges, not what a reader sees:
// a duplicate may replay an answer the replica does not have yet; the
// figures would count it as an answer lost as a replay.) The rest are
// figures: executions per key, answers lost, claims missing.

// sentinelMode is one configuration of TestReliabilityRedisSentinel.
type sentinelMode struct {
	name    string
	primary []string // extra configuration of the primary
	wait    bool     // the WAIT hook on the client
	stall   bool     // stall the replica's link before the kill
}

func TestReliabilityRedisSentinel(t *testing.T) {
	t.Parallel()
	stall := durationKnob("SENTINEL_STALL", 4*time.Second, 6*time.Second)
	workers := knob("SENTINEL_WORKERS", 6, 16)
	for _, m := range []sentinelMode{
		{name: "async-no-stall"},
		{name: "async", stall: true},
		{name: "min-replicas", primary: []string{"min-replicas-to-write 1", "min-replicas-max-lag 1"}, stall: true},
		{name: "wait", wait: true, stall: true},
	} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			sentinelFailover(t, m, workers, stall)
		})
	}
}

// sentinelAnswer is one answer a caller got.
type sentinelAnswer struct {
	id         int64
	replayed   bool
	beforeKill bool
}

// sentinelRun is one run of the handler.
type sentinelRun struct {
	id        int64
	claimSeen bool // the handler found the key in flight in Redis
	unknown   bool // reading the key failed (the primary was going away)
}

func sentinelFailover(t *testing.T, m sentinelMode, workers int, stall time.Duration) {
	ctx := context.Background()
	const master = "idem"
	primary := startRedisNode(t, false, m.primary...)
	lnk := newLink(t, primary.addr())
	// The replica has the primary's settings too: they apply once it is
	// promoted.
	replica := startRedisNode(t, false, append([]string{"replicaof 127.0.0.1 " + strconv.Itoa(lnk.port())}, m.primary...)...)
	rc := replica.client(t)
	eventually(t, 30*time.Second, "the replica in sync", func() bool {
		return infoField(ctx, rc, "replication", "master_link_status") == "up"
	})
	var sentinels []*redis.Client
	var sentinelAddrs []string
	for range 3 {
		s := startRedisNode(t, true, fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", master, primary.port),
			"sentinel down-after-milliseconds "+master+" 1000", "sentinel failover-timeout "+master+" 5000")
		sentinels, sentinelAddrs = append(sentinels, s.client(t)), append(sentinelAddrs, s.addr())
	}
	eventually(t, 30*time.Second, "each sentinel knows the replica and the other sentinels", func() bool {
		for _, s := range sentinels {
			r, err1 := s.Do(ctx, "SENTINEL", "REPLICAS", master).Slice()
			o, err2 := s.Do(ctx, "SENTINEL", "SENTINELS", master).Slice()
			if err1 != nil || err2 != nil || len(r) != 1 || len(o) != 2 {
				return false
			}
		}
		return true
	})

	client := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: master, SentinelAddrs: sentinelAddrs, ContextTimeoutEnabled: true,
		DialTimeout: 500 * time.Millisecond, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		PoolSize: 4 * workers,
	})
	t.Cleanup(func() { _ = client.Close() })
	if m.wait {
		client.AddHook(waitForReplica{client: client, replicas: 1, timeout: 500 * time.Millisecond})
	}
	store := newRedisStore(t, client, "sentinel-"+randomID(6))
	const lease = time.Second
	g, err := idem.NewGuard(store, &idem.Config{Limiter: idem.Unlimited, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu                    sync.Mutex
		runs                  = map[string][]sentinelRun{}
		answers               = map[string][]sentinelAnswer{}
		budgets               = map[string]int{}
		nextID                atomic.Int64
		killed                atomic.Bool
		answered              atomic.Int64
		storageErrs, inFlight atomic.Int64
		unanswered            []string
	)
	handler := func(key string, budget int) func(context.Context) (chaosBuy, error) {
		return func(ctx context.Context) (chaosBuy, error) {
			e, err := store.Get(ctx, backend.Ref{Principal: "alice", Key: key}, time.Time{})
			r := sentinelRun{id: nextID.Add(1), claimSeen: err == nil && e != nil && e.Response == nil, unknown: err != nil}
			mu.Lock()
			runs[key] = append(runs[key], r)
			mu.Unlock()
			time.Sleep(jitter(2))
			return chaosBuy{ID: r.id, Budget: budget}, nil
		}
	}
	// ask sends one request until it is answered, as a buyer does.
	ask := func(key string, budget int) {
		req := request("alice", key, chaosPayload(budget))
		deadline := time.Now().Add(90 * time.Second)
		for attempt := 1; ; attempt++ {
			res, err := idem.Do(ctx, g, req, handler(key, budget))
			switch {
			case err == nil:
				mu.Lock()
				answers[key] = append(answers[key], sentinelAnswer{res.Value.ID, res.Replayed, !killed.Load()})
				mu.Unlock()
				answered.Add(1)
				return
			case errors.Is(err, idem.ErrStorage) && idem.Wire(err).Code == string(idem.CodeServiceUnavailable):
				storageErrs.Add(1)
			case errors.Is(err, idem.ErrInFlight):
				inFlight.Add(1)
			default:
				t.Errorf("%s: an unclear error: %v", key, err)
			}
			if time.Now().After(deadline) {
				mu.Lock()
				unanswered = append(unanswered, key)
				mu.Unlock()
				return
			}
			time.Sleep(time.Duration(min(attempt, 10)) * 10 * time.Millisecond)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("sentinel-w%02d-%06d-%s", w, n, randomID(3))
				budget := 1000 + n
				mu.Lock()
				budgets[key] = budget
				mu.Unlock()
				var pair sync.WaitGroup
				pair.Go(func() { ask(key, budget) })
				pair.Go(func() { ask(key, budget) })
				pair.Wait()
			}
		})
	}
	eventually(t, 60*time.Second, "warm-up answers", func() bool { return answered.Load() >= 100 })
	if m.stall {
		lnk.stall()
		time.Sleep(stall)
	}
	primary.kill()
	killedAt := time.Now()
	killed.Store(true) // answers from here on come from the new primary
	lnk.cut()
	eventually(t, 60*time.Second, "the sentinels promote the replica", func() bool {
		addr, err := sentinels[0].Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", master).StringSlice()
		return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(replica.port)
	})
	promoted := time.Since(killedAt)
	// A new replica for the new primary, as an operator (or an
	// orchestrator) replaces the dead node: under WAIT or min-replicas the
	// new primary takes no write until one has synced.
	startRedisNode(t, false, append([]string{"replicaof 127.0.0.1 " + strconv.Itoa(replica.port)}, m.primary...)...)
	atPromotion := answered.Load()
	eventually(t, 60*time.Second, "answers from the new primary", func() bool { return answered.Load() >= atPromotion+100 })
	close(stop)
	wg.Wait()

	// Every key once more, after the failover: the stored answer, or (if
	// the new primary lost it) a run of its own.
	mu.Lock()
	keys := make([]string, 0, len(budgets))
	for k := range budgets {
		keys = append(keys, k)
	}
	mu.Unlock()
	runJobs(t, workers, keys, func(_ int, key string) error {
		mu.Lock()
		budget := budgets[key]
		mu.Unlock()
		ask(key, budget)
		return nil
	})

	// The tally.
	var (
		executions, duplicates, dupLost, lostExecuted, lostReplayed, changed, claimsMissing, preKill int
		wrong                                                                                        []string
	)
	mu.Lock()
	defer mu.Unlock()
	if len(unanswered) > 0 {
		t.Errorf("%d requests never got an answer in 90 s, e.g. %s", len(unanswered), unanswered[0])
	}
	for _, key := range keys {
		rs, as := runs[key], answers[key]
		executions += len(rs)
		if len(rs) > 1 {
			duplicates++
		}
		ids := map[int64]bool{}
		for _, r := range rs {
			ids[r.id] = true
			if !r.claimSeen && !r.unknown {
				claimsMissing++
			}
		}
		if len(as) == 0 {
			continue
		}
		final := as[len(as)-1].id // the answer after the failover
		distinct := map[int64]bool{}
		for _, a := range as {
			distinct[a.id] = true
			if !ids[a.id] {
				wrong = append(wrong, key)
			}
			if !a.beforeKill {
				continue
			}
			preKill++
			if a.id != final {
				if a.replayed {
					lostReplayed++
				} else {
					lostExecuted++
				}
			}
		}
		if len(distinct) > 1 {
			changed++
		}
		if len(rs) > 1 && len(distinct) > 1 {
			dupLost++
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d keys answered with a value none of their runs produced, e.g. %s", len(wrong), wrong[0])
	}
	if m.wait && (lostExecuted > 0 || claimsMissing > 0) {
		t.Errorf("under WAIT, %d answers acknowledged as executed were lost and %d handlers ran without their claim in Redis", lostExecuted, claimsMissing)
	}
	setup := "no stall"
	if m.stall {
		setup = fmt.Sprintf("replica link stalled %v before the kill", stall)
	}
	if len(m.primary) > 0 {
		setup += ", " + strings.Join(m.primary, ", ")
	}
	if m.wait {
		setup += ", WAIT 1 500 after every step"
	}
	figure(t, "redis sentinel failover "+m.name, "primary + replica + 3 sentinels (redis-server), go-redis FailoverClient; %s; %d workers sending each new key twice at once, lease %v; primary SIGKILLed, replica promoted %v later, a fresh replica joins it: %d keys, %d answers before the kill; %d executions, %d keys executed twice (%d after a lost answer, %d in flight at the kill: the Guard's crash window); answers lost in the failover: %d acknowledged as executed, %d acknowledged as replays; %d keys answered two different ways; %d handlers ran without finding their claim; %d SERVICE_UNAVAILABLE and %d IDEMPOTENCY_IN_FLIGHT answers retried; every request answered",
		setup, workers, lease, promoted.Round(100*time.Millisecond),
		len(keys), preKill, executions, duplicates, dupLost, duplicates-dupLost, lostExecuted, lostReplayed, changed, claimsMissing, storageErrs.Load(), inFlight.Load())
}

// errNotReplicated is what waitForReplica makes of a write that no replica
// acknowledged within the timeout.
var errNotReplicated = errors.New("the write was not acknowledged by a replica in time (WAIT)")

// waitForReplica is a go-redis hook that follows every script call (each
// step of redisstore: claim, complete, renew, release, get) with
// WAIT replicas timeout on the same connection, in one pipeline, and turns
// a step that fewer replicas acknowledged into an error. It is the
// "WAIT after each write" of a Redis primary with asynchronous replicas,
// added from outside redisstore: an acknowledged claim or answer is on a
// replica before the Guard acts on it.
type waitForReplica struct {
	client   *redis.Client
	replicas int
	timeout  time.Duration
}

func (h waitForReplica) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h waitForReplica) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h waitForReplica) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name != "evalsha" && name != "eval" {
			return next(ctx, cmd)
		}
		var acked *redis.Cmd
		_, _ = h.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			_ = p.Process(ctx, cmd)
			acked = p.Do(ctx, "WAIT", h.replicas, h.timeout.Milliseconds())
			return nil
		})
		if err := cmd.Err(); err != nil {
			return err
		}
		if n, err := acked.Int64(); err != nil {
			cmd.SetErr(fmt.Errorf("%w: %w", errNotReplicated, err))
		} else if n < int64(h.replicas) {
			cmd.SetErr(errNotReplicated)
		}
		return cmd.Err()
	}
}
