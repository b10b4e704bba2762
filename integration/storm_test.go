package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/adcp-go/idempotency/memstore"
)

// Concurrency storms (issue 7, part 3): 200 goroutines over 20 keys, 70 %
// sending one payload and 30 % another under the same key, all released
// at once. Each key executes exactly once, and every caller gets the one
// answer, IDEMPOTENCY_CONFLICT or IDEMPOTENCY_IN_FLIGHT: nothing else. A
// caller with the payload that won never gets CONFLICT, one with the other
// payload never gets the answer.

const (
	stormCallers = 200
	stormKeys    = 20
)

// stormOutcome is what one caller got: executed, replayed, conflict or
// in_flight (anything else fails the storm), and the answer's identity.
type stormOutcome struct {
	kind string
	id   string
}

// storm releases the callers of one round at once and checks the rules
// above; executions reports how often a key's work ran.
func storm(t *testing.T, round int, call func(i int, key string, variant int) stormOutcome, executions func(key string) int, counts *tally) {
	t.Helper()
	keys := make([]string, stormKeys)
	for k := range keys {
		keys[k] = fmt.Sprintf("storm-r%d-k%02d-%s", round, k, randomID(4))
	}
	variant := func(i int) int {
		if (i/stormKeys)%10 < 7 {
			return 0
		}
		return 1
	}
	out := make([]stormOutcome, stormCallers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range stormCallers {
		wg.Go(func() {
			<-start
			out[i] = call(i, keys[i%stormKeys], variant(i))
		})
	}
	close(start)
	wg.Wait()

	for k, key := range keys {
		n := executions(key)
		if n == 0 {
			// Every caller was told IN_FLIGHT and none ran it. With a
			// WaitLimit of milliseconds on a loaded machine the one
			// claimer can wait out even the claim's 100 ms lock floor on a
			// lock other than the key's (the table's extension lock), and
			// its duplicates waited out theirs: IN_FLIGHT is then early,
			// not wrong. The buyer's retry runs it, once.
			for attempt := 0; attempt < 100 && call(k, key, variant(k)).kind == "in_flight"; attempt++ {
				time.Sleep(20 * time.Millisecond)
			}
			n = executions(key)
			t.Logf("%s: every caller was told IN_FLIGHT; a retry ran it (%d execution)", key, n)
		}
		if n != 1 {
			t.Errorf("%s executed %d times, want once", key, n)
		}
		winner, id, executed := -1, "", 0
		for i := k; i < stormCallers; i += stormKeys {
			o := out[i]
			counts.add(o.kind)
			switch o.kind {
			case "executed", "replayed":
				if o.kind == "executed" {
					executed++
				}
				if winner == -1 {
					winner, id = variant(i), o.id
				}
				if variant(i) != winner || o.id != id {
					t.Errorf("%s: caller %d (payload %d) got answer %s; another caller (payload %d) got %s", key, i, variant(i), o.id, winner, id)
				}
			case "conflict", "in_flight":
			default:
				t.Errorf("%s: caller %d got %q, want the answer, CONFLICT or IN_FLIGHT", key, i, o.kind)
			}
		}
		if executed > 1 {
			t.Errorf("%s: %d callers were told their request executed", key, executed)
		}
		for i := k; i < stormCallers; i += stormKeys {
			if out[i].kind == "conflict" && winner != -1 && variant(i) == winner {
				t.Errorf("%s: caller %d sent the winning payload and got CONFLICT", key, i)
			}
		}
	}
}

func idemOutcome(res idem.Result[chaosBuy], err error) stormOutcome {
	got, _ := classify(res, err)
	switch got {
	case "ErrConflict":
		got = "conflict"
	case "ErrInFlight":
		got = "in_flight"
	}
	return stormOutcome{got, fmt.Sprint(res.Value.ID)}
}

// keyCounter counts executions per key for the Guard backends.
type keyCounter struct {
	mu sync.Mutex
	n  map[string]int
	id atomic.Int64
}

func (c *keyCounter) run(key string, budget int) func(context.Context) (chaosBuy, error) {
	return func(context.Context) (chaosBuy, error) {
		time.Sleep(jitter(5))
		c.mu.Lock()
		if c.n == nil {
			c.n = map[string]int{}
		}
		c.n[key]++
		c.mu.Unlock()
		return chaosBuy{ID: c.id.Add(1), Budget: budget}, nil
	}
}

func (c *keyCounter) executions(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func TestReliabilityStorm(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rounds := knob("STORM_ROUNDS", 2, 20)

	policies := []struct {
		name string
		cfg  idem.Config
	}{
		{"wait", idem.Config{Limiter: idem.Unlimited}},                                                            // wait up to 5 s, then replay
		{"short-wait", idem.Config{Limiter: idem.Unlimited, WaitLimit: 2 * time.Millisecond}},                     // mostly IN_FLIGHT
		{"reject", idem.Config{Limiter: idem.Unlimited, Duplicates: idem.RejectInFlight, WaitLimit: time.Second}}, // IN_FLIGHT at once
	}
	backends := []struct {
		name string
		run  func(t *testing.T, cfg idem.Config, counts *tally)
	}{
		{"RunInTx", func(t *testing.T, cfg idem.Config, counts *tally) {
			pool := chaosSchema(t)
			s := newStore(t, &cfg)
			for r := range rounds {
				storm(t, r, func(i int, key string, v int) stormOutcome {
					return idemOutcome(idem.RunInTx(ctx, s, pool, request("alice", key, chaosPayload(5000+v)), func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
						time.Sleep(jitter(5))
						return chaosWrite("alice", key, 5000+v)(ctx, tx)
					}))
				}, func(key string) int {
					return count(t, pool, `SELECT count(*) FROM chaos_buys WHERE idem_key = $1`, key)
				}, counts)
			}
			invariants(t, pool)
		}},
		{"PostgresBackend", func(t *testing.T, cfg idem.Config, counts *tally) {
			guardStorm(t, &idem.PostgresBackend{DB: newSchema(t)}, cfg, rounds, counts)
		}},
		{"redisstore", func(t *testing.T, cfg idem.Config, counts *tally) {
			needRedis(t)
			guardStorm(t, newRedisStore(t, newRedisClient(t, redisURL, nil), "storm-"+randomID(6)), cfg, rounds, counts)
		}},
		{"memstore", func(t *testing.T, cfg idem.Config, counts *tally) {
			m := memstore.New(nil)
			t.Cleanup(func() { _ = m.Close() })
			guardStorm(t, m, cfg, rounds, counts)
		}},
	}
	for _, b := range backends {
		for _, p := range policies {
			t.Run(b.name+"/"+p.name, func(t *testing.T) {
				var counts tally
				start := time.Now()
				b.run(t, p.cfg, &counts)
				figure(t, "storm "+b.name+"/"+p.name, "%d rounds x %d callers on %d keys (70/30 payloads) in %v: each key executed once; %s; 0 other outcomes",
					rounds, stormCallers, stormKeys, time.Since(start).Round(10*time.Millisecond), counts.String())
			})
		}
	}
}

func guardStorm(t *testing.T, b backend.Backend, cfg idem.Config, rounds int, counts *tally) {
	g, err := idem.NewGuard(b, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	var c keyCounter
	for r := range rounds {
		storm(t, r, func(i int, key string, v int) stormOutcome {
			return idemOutcome(idem.Do(context.Background(), g, request("alice", key, chaosPayload(5000+v)), c.run(key, 5000+v)))
		}, c.executions, counts)
	}
}

// The storm over MCP against two seller processes on one database: each
// media buy is made once across both.
func TestReliabilityStormTwoSellers(t *testing.T) {
	t.Parallel()
	rounds := knob("STORM_ROUNDS", 2, 20)
	pool := newSchema(t)
	dsn := pool.Config().ConnString()
	tokens := "p1=" + sellertest.Token
	_, urlA := sellerProcess(t, "-database-url", dsn, "-tokens", tokens, "-insert-rate", "0")
	_, urlB := sellerProcess(t, "-database-url", dsn, "-tokens", tokens, "-insert-rate", "0")
	const sessions = 20
	cs := make([]*mcp.ClientSession, sessions)
	for i := range cs {
		cs[i] = sellertest.Connect(t, []string{urlA, urlB}[i%2], sellertest.Token)
	}
	var counts tally
	start := time.Now()
	for r := range rounds {
		storm(t, r, func(i int, key string, v int) stormOutcome {
			a, err := callTool(cs[i%sessions], "create_media_buy", sellertest.CreateArgs(key, float64(5000+v), "", fmt.Sprint("caller-", i)))
			switch {
			case err != nil:
				return stormOutcome{kind: "protocol error: " + err.Error()}
			case !a.IsError && a.Body["replayed"] == true:
				return stormOutcome{"replayed", fmt.Sprint(a.Body["media_buy_id"])}
			case !a.IsError:
				return stormOutcome{"executed", fmt.Sprint(a.Body["media_buy_id"])}
			case errorCode(a) == "IDEMPOTENCY_CONFLICT":
				return stormOutcome{kind: "conflict"}
			case errorCode(a) == "IDEMPOTENCY_IN_FLIGHT":
				return stormOutcome{kind: "in_flight"}
			}
			return stormOutcome{kind: a.Raw}
		}, func(key string) int {
			return sellerExecutions(t, pool, key)
		}, &counts)
	}
	if n := count(t, pool, `SELECT count(*) FROM seller_media_buys`); n != rounds*stormKeys {
		t.Errorf("%d media buys for %d keys", n, rounds*stormKeys)
	}
	figure(t, "storm two seller processes", "%d rounds x %d callers on %d keys (70/30 payloads) over MCP, %d sessions across 2 processes, in %v: each key executed once; %s; 0 other outcomes",
		rounds, stormCallers, stormKeys, sessions, time.Since(start).Round(10*time.Millisecond), counts.String())
}

// sellerExecutions counts the media buys made for a key: the buys named by
// the key's stored answer, plus any buy that no stored answer names.
func sellerExecutions(t testing.TB, pool *pgxpool.Pool, key string) int {
	answers := sellerAnswers(t, pool)
	named := map[string]bool{}
	for _, id := range answers {
		named[id] = true
	}
	rows, err := pool.Query(context.Background(), `SELECT media_buy_id FROM seller_media_buys`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, id := range ids {
		if id == answers[key] || !named[id] {
			n++
		}
	}
	return n
}
