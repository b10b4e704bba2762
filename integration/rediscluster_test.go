package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/adcp-go/idempotency/idem"
)

// Redis Cluster, real (issue 18, item 4a): three masters started from the
// machine's redis-server in cluster mode, slots assigned by hand
// (CLUSTER SET-CONFIG-EPOCH, ADDSLOTSRANGE, MEET), redisstore on a go-redis
// ClusterClient. Storms run while slots holding the current round's keys
// are migrated from one master to the next (CLUSTER SETSLOT IMPORTING and
// MIGRATING, MIGRATE, SETSLOT NODE), so that requests meet ASK (the key has
// moved, the slot has not yet) and MOVED (the slot has moved) redirects,
// which the client follows. Each key still executes once, and a retry of
// each key after its round (which meets MOVED if its slot moved since the
// client last looked) replays the answer. Then the layout: every key the
// store wrote lies in the slot of its hash tag, so a key's steps (and any
// second key of one entry) stay on one master.

// redisCluster is a running cluster: its nodes, their cluster ids and each
// slot's master as the test last set it.
type redisCluster struct {
	nodes   []*redisNode
	clients []*redis.Client
	ids     []string

	mu    sync.Mutex
	owner [16384]int
}

func startRedisCluster(t *testing.T, masters int) *redisCluster {
	t.Helper()
	ctx := context.Background()
	rc := &redisCluster{}
	for i := range masters {
		bus := freePort(t)
		n := startRedisNode(t, false, "cluster-enabled yes", "cluster-config-file nodes.conf",
			"cluster-node-timeout 5000", "cluster-port "+strconv.Itoa(bus))
		c := n.client(t)
		lo, hi := i*16384/masters, (i+1)*16384/masters-1
		for _, args := range [][]any{{"CLUSTER", "SET-CONFIG-EPOCH", i + 1}, {"CLUSTER", "ADDSLOTSRANGE", lo, hi}} {
			if err := c.Do(ctx, args...).Err(); err != nil {
				t.Fatalf("%v on node %d: %v", args, i, err)
			}
		}
		for s := lo; s <= hi; s++ {
			rc.owner[s] = i
		}
		id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatal(err)
		}
		rc.nodes, rc.clients, rc.ids = append(rc.nodes, n), append(rc.clients, c), append(rc.ids, id)
		if i > 0 {
			if err := rc.clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.port, bus).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, 30*time.Second, "every node sees the cluster ok with all masters", func() bool {
		for _, c := range rc.clients {
			if infoClusterField(ctx, c, "cluster_state") != "ok" || infoClusterField(ctx, c, "cluster_known_nodes") != strconv.Itoa(masters) {
				return false
			}
		}
		return true
	})
	return rc
}

func infoClusterField(ctx context.Context, c *redis.Client, field string) string {
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

func (rc *redisCluster) addrs() []string {
	a := make([]string, len(rc.nodes))
	for i, n := range rc.nodes {
		a[i] = n.addr()
	}
	return a
}

// move migrates slot from its master to the next one, the way
// redis-cli --cluster reshard does, but pausing with the keys moved and the
// slot not yet reassigned, when commands for them get ASK. It returns how
// many keys it moved.
func (rc *redisCluster) move(ctx context.Context, slot int, pause time.Duration) (int, error) {
	rc.mu.Lock()
	src := rc.owner[slot]
	rc.mu.Unlock()
	dst := (src + 1) % len(rc.nodes)
	from, to := rc.clients[src], rc.clients[dst]
	if err := to.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", rc.ids[src]).Err(); err != nil {
		return 0, err
	}
	if err := from.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", rc.ids[dst]).Err(); err != nil {
		return 0, err
	}
	moved := 0
	for {
		keys, err := from.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		if err != nil {
			return moved, err
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", rc.nodes[dst].port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := from.Do(ctx, args...).Err(); err != nil {
			return moved, err
		}
		moved += len(keys)
		time.Sleep(pause)
	}
	// The new master first, then the old one, then the rest: the order
	// redis-cli uses, so that no node ever points the slot nowhere.
	order := []int{dst, src}
	for i := range rc.nodes {
		if i != dst && i != src {
			order = append(order, i)
		}
	}
	for _, i := range order {
		if err := rc.clients[i].Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", rc.ids[dst]).Err(); err != nil {
			return moved, err
		}
	}
	rc.mu.Lock()
	rc.owner[slot] = dst
	rc.mu.Unlock()
	return moved, nil
}

// redirects counts the MOVED and ASK replies the nodes of a ClusterClient
// send it (the client follows them; the caller never sees them).
type redirects struct{ moved, ask atomic.Int64 }

func (r *redirects) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *redirects) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (r *redirects) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil {
			switch msg := err.Error(); {
			case strings.HasPrefix(msg, "MOVED "):
				r.moved.Add(1)
			case strings.HasPrefix(msg, "ASK "):
				r.ask.Add(1)
			}
		}
		return err
	}
}

func TestReliabilityRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rounds := knob("CLUSTER_ROUNDS", 3, 20)
	maxRounds := max(rounds, 60) // more, if no redirect has been seen yet
	rc := startRedisCluster(t, 3)
	var seen redirects
	client := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: rc.addrs(), ContextTimeoutEnabled: true, MaxRedirects: 8,
		NewClient: func(o *redis.Options) *redis.Client {
			c := redis.NewClient(o)
			c.AddHook(&seen)
			return c
		},
	})
	t.Cleanup(func() { _ = client.Close() })
	prefix := "cluster-" + randomID(6)
	store := newRedisStore(t, client, prefix)
	g, err := idem.NewGuard(store, &idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		t.Fatal(err)
	}

	// The migrator: over and over, find a key of the running round and
	// move its slot to the next master, until ctx ends.
	var migrations, keysMoved atomic.Int64
	migrate := func(ctx context.Context, round int) error {
		pattern := fmt.Sprintf("%s:*storm-r%d-*", prefix, round)
		for ctx.Err() == nil {
			var mu sync.Mutex
			var found []string
			_ = client.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
				keys, _, err := node.Scan(ctx, 0, pattern, 1000).Result()
				mu.Lock()
				found = append(found, keys...)
				mu.Unlock()
				return err
			})
			if len(found) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			slot, err := client.ClusterKeySlot(ctx, found[rand.IntN(len(found))]).Result()
			if err != nil {
				continue
			}
			// A migration, once begun, is finished even when ctx ends.
			n, err := rc.move(context.WithoutCancel(ctx), int(slot), 15*time.Millisecond)
			if err != nil {
				return fmt.Errorf("moving slot %d: %w", slot, err)
			}
			migrations.Add(1)
			keysMoved.Add(int64(n))
		}
		return nil
	}

	var c keyCounter
	var counts tally
	began := time.Now()
	ran, replays := 0, 0
	for r := 0; r < maxRounds; r++ {
		if r >= rounds && seen.moved.Load() > 0 && seen.ask.Load() > 0 {
			break
		}
		mctx, stopMigrating := context.WithCancel(ctx)
		migrated := make(chan error, 1)
		go func() { migrated <- migrate(mctx, r) }()
		var mu sync.Mutex
		answers := map[string]stormOutcome{} // key -> the answer
		budgets := map[string]int{}          // key -> the payload that won
		storm(t, r, func(i int, key string, v int) stormOutcome {
			run := c.run(key, 5000+v)
			o := idemOutcome(idem.Do(ctx, g, request("alice", key, chaosPayload(5000+v)), func(ctx context.Context) (chaosBuy, error) {
				time.Sleep(10*time.Millisecond + jitter(20)) // duplicates keep asking while the slot moves
				return run(ctx)
			}))
			if o.kind == "executed" || o.kind == "replayed" {
				mu.Lock()
				answers[key], budgets[key] = o, 5000+v
				mu.Unlock()
			}
			return o
		}, c.executions, &counts)
		ran++
		stopMigrating()
		if err := <-migrated; err != nil {
			t.Fatal(err)
		}
		// Each key once more, after the round: the answer, from wherever
		// its slot now is (a client that has not seen the move gets MOVED).
		for key, want := range answers {
			res, err := idem.Do(ctx, g, request("alice", key, chaosPayload(budgets[key])), func(context.Context) (chaosBuy, error) {
				return chaosBuy{}, errors.New("ran again")
			})
			if err != nil || !res.Replayed || fmt.Sprint(res.Value.ID) != want.id {
				t.Errorf("%s: the retry after the round = %+v, %v; want the replay of %s", key, res.Value, err, want.id)
			}
			replays++
		}
	}
	if seen.moved.Load() == 0 || seen.ask.Load() == 0 {
		t.Errorf("in %d rounds the migrations redirected no request (%d MOVED, %d ASK): the test did not test what it says", ran, seen.moved.Load(), seen.ask.Load())
	}

	// The layout: every key of the store lies in the slot of its hash tag,
	// on the master that owns that slot; keys sharing a tag share a slot.
	var mu sync.Mutex
	tagSlots := map[string]map[int64]bool{}
	perMaster := map[string]int{}
	entries := 0
	err = client.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		iter := node.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			open, end := strings.IndexByte(key, '{'), strings.IndexByte(key, '}')
			if open < 0 || end < open+2 {
				return fmt.Errorf("key %q has no hash tag", key)
			}
			slot, err1 := node.ClusterKeySlot(ctx, key).Result()
			tagSlot, err2 := node.ClusterKeySlot(ctx, key[open+1:end]).Result()
			inSlot, err3 := node.ClusterCountKeysInSlot(ctx, int(slot)).Result()
			if err := errors.Join(err1, err2, err3); err != nil {
				return err
			}
			if slot != tagSlot || inSlot == 0 {
				return fmt.Errorf("key %q is in slot %d, its tag's slot is %d; %d keys of that slot on %s", key, slot, tagSlot, inSlot, node.Options().Addr)
			}
			mu.Lock()
			tag := key[open : end+1]
			if tagSlots[tag] == nil {
				tagSlots[tag] = map[int64]bool{}
			}
			tagSlots[tag][slot] = true
			perMaster[node.Options().Addr]++
			entries++
			mu.Unlock()
		}
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	slots := map[int64]bool{}
	for tag, s := range tagSlots {
		if len(s) != 1 {
			t.Errorf("keys of the tag %s lie in %d slots", tag, len(s))
		}
		for slot := range s {
			slots[slot] = true
		}
	}
	if entries != ran*stormKeys {
		t.Errorf("%d entries for %d keys", entries, ran*stormKeys)
	}
	spread := make([]string, 0, len(rc.nodes))
	for _, a := range rc.addrs() {
		spread = append(spread, strconv.Itoa(perMaster[a]))
	}
	figure(t, "redis cluster", "3 masters (redis-server, cluster mode), go-redis ClusterClient; %d rounds x %d callers on %d keys (70/30 payloads) while %d slot migrations moved %d keys of the running round (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE), in %v: each key executed once; %s; %d retries after the rounds replayed the answer; the client followed %d MOVED and %d ASK redirects; %d entries, each in the slot of its hash tag, one slot per tag, %d slots used, %s entries per master",
		ran, stormCallers, stormKeys, migrations.Load(), keysMoved.Load(), time.Since(began).Round(10*time.Millisecond), counts.String(), replays,
		seen.moved.Load(), seen.ask.Load(), entries, len(slots), strings.Join(spread, "/"))
}
