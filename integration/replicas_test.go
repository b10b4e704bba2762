package integration

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/webhook/riverdelivery"
)

// Many replicas (issue 18, item 3): N processes of one seller behind a
// round-robin load balancer, a storm of same-key and different-key
// requests through it, and in each round one replica killed with SIGKILL
// while the storm runs, restarted after the round. The buyer retries what
// a buyer retries: a transport failure (the balancer answers 502 for a
// dead replica; a connection cut mid-answer) and SERVICE_UNAVAILABLE.
//
// Twice: the reference seller binary in Postgres mode (RunInTx: the media
// buy, its webhook delivery job (River) and the stored answer commit
// together), and Guard processes on redisstore (the claim and the answer
// are separate steps around the handler).

// roundRobin is a reverse proxy that sends each request to the next of its
// backends in turn, as a load balancer without health checks does: a
// request for a dead backend gets 502 Bad Gateway.
type roundRobin struct {
	srv      *httptest.Server
	proxy    *httputil.ReverseProxy
	mu       sync.Mutex
	backends []*url.URL
	waiting  []atomic.Int64 // requests sent to each backend and not yet answered
	next     atomic.Uint64
	failed   atomic.Int64 // requests answered 502
}

type backendIndex struct{}

func newRoundRobin(t testing.TB, n int) *roundRobin {
	p := &roundRobin{backends: make([]*url.URL, n), waiting: make([]atomic.Int64, n)}
	index := func(r *http.Request) int { return r.Context().Value(backendIndex{}).(int) }
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			i := index(r.In)
			p.mu.Lock()
			r.SetURL(p.backends[i])
			p.mu.Unlock()
			p.waiting[i].Add(1)
		},
		ModifyResponse: func(r *http.Response) error {
			p.waiting[index(r.Request)].Add(-1)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, _ error) {
			p.waiting[index(r)].Add(-1)
			p.failed.Add(1)
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

// ServeHTTP forwards r to the next backend.
func (p *roundRobin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(p.next.Add(1) % uint64(len(p.backends)))
	p.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), backendIndex{}, i)))
}

// set makes base (scheme://host:port) the i-th backend.
func (p *roundRobin) set(i int, base string) {
	u, err := url.Parse(base)
	if err != nil {
		panic(err)
	}
	p.mu.Lock()
	p.backends[i] = u
	p.mu.Unlock()
}

func (p *roundRobin) URL() string { return p.srv.URL }

// killMidStorm kills the balancer's backend victim, the process c, once a
// tenth of the storm's callers have their answer and victim has a request
// it has not answered yet, unless the round ended first (roundDone); it
// calls mark just before the kill. It reports on the returned channel when
// the kill landed while the storm ran (the zero time if it did not) and how
// many requests the victim had not answered.
func (p *roundRobin) killMidStorm(victim int, c *child, answered *atomic.Int64, roundDone *atomic.Bool, mark func()) <-chan stormKill {
	killed := make(chan stormKill, 1)
	go func() {
		// Answers come in bursts (a key's duplicates are answered together),
		// and a burst is when the victim's answers may already be on the
		// wire: kill a random moment after the threshold, not at it.
		for answered.Load() < stormCallers/10 && !roundDone.Load() {
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(jitter(10))
		for p.waiting[victim].Load() == 0 && !roundDone.Load() {
			time.Sleep(100 * time.Microsecond)
		}
		mark()
		unanswered := p.waiting[victim].Load()
		c.kill()
		if roundDone.Load() {
			killed <- stormKill{}
			return
		}
		killed <- stormKill{time.Now(), unanswered}
	}()
	return killed
}

// stormKill is when a kill landed during a storm, and how many requests
// the killed process had not answered.
type stormKill struct {
	at         time.Time
	unanswered int64
}

// retryAsBuyer sends a request until it gets an answer: again after a
// transport failure or a SERVICE_UNAVAILABLE answer (retry reports which),
// with a growing pause, for at most 90 s.
func retryAsBuyer[A any](send func() (A, error), unavailable func(A) bool, retry func(transport bool)) (A, error) {
	deadline := time.Now().Add(90 * time.Second)
	for attempt := 1; ; attempt++ {
		a, err := send()
		if err == nil && !unavailable(a) {
			return a, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("still SERVICE_UNAVAILABLE after %d attempts", attempt)
			}
			return a, err
		}
		retry(err != nil)
		time.Sleep(time.Duration(min(attempt, 10)) * 20 * time.Millisecond)
	}
}

// mcpOutcome names a create_media_buy answer for the storm.
func mcpOutcome(a sellertest.Answer) stormOutcome {
	switch {
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
}

// createThrough sends create_media_buy over a fresh MCP session through
// the balancer at base.
func createThrough(base string, args map[string]any) (sellertest.Answer, error) {
	cs, err := connectMCP(base+"/mcp", sellertest.Token)
	if err != nil {
		return sellertest.Answer{}, err
	}
	defer cs.Close()
	return callTool(cs, "create_media_buy", args)
}

func TestReliabilityReplicasSeller(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	replicas := knob("REPLICAS", 3, 5)
	rounds := knob("REPLICA_ROUNDS", 2, 10)
	pool := newSchema(t)
	dsn := pool.Config().ConnString()
	receiver := sellertest.NewReceiver(t)
	lb := newRoundRobin(t, replicas)

	procs := make([]*child, replicas)
	apps := make([]string, replicas) // each process's application_name, to see its sessions
	gen := 0
	start := func(i int) {
		gen++
		apps[i] = fmt.Sprintf("replica-%d-%s", gen, randomID(3))
		c, mcpURL := sellerProcess(t, "-database-url", dsn+"&application_name="+apps[i],
			"-tokens", "p1="+sellertest.Token, "-insert-rate", "0", "-dev")
		procs[i] = c
		base, _ := url.Parse(mcpURL)
		base.Path = ""
		lb.set(i, base.String())
	}
	for i := range replicas {
		start(i)
	}
	hookPath := func(key string) string { return "/op-" + key }

	var (
		counts               tally
		answered             atomic.Int64
		transport, unavail   atomic.Int64
		keysMu               sync.Mutex
		keys                 []string
		killsMid, killsAfter int
		cut                  int64 // requests the killed processes had not answered
	)
	began := time.Now()
	for r := range rounds {
		answered.Store(0)
		var roundDone atomic.Bool
		victim := r % replicas
		killed := lb.killMidStorm(victim, procs[victim], &answered, &roundDone, func() {})
		storm(t, r, func(i int, key string, v int) stormOutcome {
			if i < stormKeys {
				keysMu.Lock()
				keys = append(keys, key)
				keysMu.Unlock()
			}
			args := sellertest.CreateArgs(key, float64(5000+v), receiver.URL(hookPath(key)), fmt.Sprint("caller-", i))
			a, err := retryAsBuyer(func() (sellertest.Answer, error) { return createThrough(lb.URL(), args) },
				func(a sellertest.Answer) bool { return errorCode(a) == "SERVICE_UNAVAILABLE" },
				func(tr bool) {
					if tr {
						transport.Add(1)
					} else {
						unavail.Add(1)
					}
				})
			if err != nil {
				return stormOutcome{kind: "no answer: " + err.Error()}
			}
			answered.Add(1)
			return mcpOutcome(a)
		}, func(key string) int { return sellerExecutions(t, pool, key) }, &counts)
		roundDone.Store(true)
		k := <-killed
		if k.at.IsZero() {
			killsAfter++
		} else {
			killsMid++
			cut += k.unanswered
		}
		// The dead replica's sessions are gone once Postgres has noticed;
		// then the webhook deliveries it was running are made available
		// again at once, rather than when River's leader rescues them
		// (RescueStuckJobsAfter, an hour by default).
		if err := waitSessionsGone(ctx, pool, apps[victim]); err != nil {
			t.Fatal(err)
		}
		if !k.at.IsZero() {
			rescueDeliveries(t, pool, k.at)
		}
		start(victim)
	}
	if killsMid == 0 {
		t.Errorf("no kill landed while a storm ran (%d after)", killsAfter)
	}
	if n := count(t, pool, `SELECT count(*) FROM seller_media_buys`); n != len(keys) {
		t.Errorf("%d media buys for %d keys", n, len(keys))
	}

	// Every key again, through the balancer with every replica up: the
	// stored answer, the same media buy.
	replays := 0
	stored := sellerAnswers(t, pool) // idempotency key -> media buy
	for _, key := range keys {
		buy := stored[key]
		var budget float64
		if err := pool.QueryRow(ctx, `SELECT total_budget FROM seller_media_buys WHERE media_buy_id = $1`, buy).Scan(&budget); err != nil {
			t.Fatalf("%s: the media buy of the stored answer: %v", key, err)
		}
		a, err := retryAsBuyer(func() (sellertest.Answer, error) {
			return createThrough(lb.URL(), sellertest.CreateArgs(key, budget, receiver.URL(hookPath(key)), "again"))
		}, func(a sellertest.Answer) bool { return errorCode(a) == "SERVICE_UNAVAILABLE" }, func(bool) {})
		switch {
		case err != nil:
			t.Errorf("%s: retry: %v", key, err)
		case a.Body["replayed"] != true || a.Body["media_buy_id"] != buy:
			t.Errorf("%s: retry answered %s, want the replay of %s", key, a.Raw, buy)
		default:
			replays++
		}
	}

	// Webhooks: every event delivered; per media buy one event (one
	// event idempotency_key), naming that buy. A replica killed between a
	// POST and River's bookkeeping sends the event again with the same key
	// (at least once); those are counted.
	eventually(t, 60*time.Second, "every webhook delivery job final", func() bool {
		return count(t, pool, `SELECT count(*) FROM river_job WHERE kind = $1
			AND state NOT IN ('completed', 'cancelled', 'discarded')`, riverdelivery.Kind) == 0
	})
	if n := count(t, pool, `SELECT count(*) FROM river_job WHERE kind = $1 AND state <> 'completed'`, riverdelivery.Kind); n != 0 {
		t.Errorf("%d webhook deliveries gave up", n)
	}
	var posts, resends, cutOff int
	for _, key := range keys {
		buy := stored[key]
		events := map[string]bool{}
		for _, d := range receiver.Deliveries(hookPath(key)) {
			posts++
			ek, _ := d["idempotency_key"].(string)
			if ek == "" {
				cutOff++ // a POST cut off by the kill; River delivers it again
				continue
			}
			if res, _ := d["result"].(map[string]any); res["media_buy_id"] != buy {
				t.Errorf("%s: a webhook for media buy %v; the committed buy is %s", key, res["media_buy_id"], buy)
			}
			if events[ek] {
				resends++
			}
			events[ek] = true
		}
		if len(events) != 1 {
			t.Errorf("%s: %d distinct webhook events for media buy %s, want 1", key, len(events), buy)
		}
	}
	figure(t, "replicas: seller processes", "%d processes (Postgres mode) behind a round-robin balancer, %d rounds x %d callers on %d keys (70/30 payloads) over MCP, one process SIGKILLed per round (%d mid-storm, %d requests unanswered; %d after) and restarted, in %v: each key executed once (%d media buys for %d keys); %s; retries: %d after a transport failure (%d answered 502 by the balancer), %d after SERVICE_UNAVAILABLE, all answered; %d later retries replayed the stored answer; webhooks: %d POSTs, one event per media buy, %d resends of an event (at least once), %d POSTs cut off by a kill",
		replicas, rounds, stormCallers, stormKeys, killsMid, cut, killsAfter, time.Since(began).Round(10*time.Millisecond),
		count(t, pool, `SELECT count(*) FROM seller_media_buys`), len(keys), counts.String(), transport.Load(), lb.failed.Load(), unavail.Load(), replays, posts, resends, cutOff)
}

// rescueDeliveries makes the webhook deliveries that were running at
// killedAt available again, as River's leader does for a dead process's
// jobs after RescueStuckJobsAfter. A live replica that was delivering one of
// them at that moment may then send it once more, with the same event key;
// the receiver counts that as a resend.
func rescueDeliveries(t testing.TB, pool *pgxpool.Pool, killedAt time.Time) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `UPDATE river_job SET state = 'available', scheduled_at = now()
		WHERE kind = $1 AND state = 'running' AND attempted_at <= $2`, riverdelivery.Kind, killedAt); err != nil {
		t.Fatal(err)
	}
}

func TestReliabilityReplicasRedis(t *testing.T) {
	needRedis(t)
	t.Parallel()
	ctx := context.Background()
	replicas := knob("REPLICAS", 3, 5)
	rounds := knob("REPLICA_ROUNDS", 2, 10)
	const leaseMs = 1000
	prefix := "replicas-" + randomID(6)
	rdb := newRedisClient(t, redisURL, nil)
	lb := newRoundRobin(t, replicas)

	procs := make([]*child, replicas)
	gens := make([]int64, replicas)
	var gen int64
	start := func(i int) {
		gen++
		c, base, err := startGuardChild(guardSpec{Mode: "serve", Gen: gen, RedisURL: redisURL, Prefix: prefix, LeaseMs: leaseMs})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.kill() })
		procs[i], gens[i] = c, gen
		lb.set(i, base)
	}
	for i := range replicas {
		start(i)
	}

	var (
		mu         sync.Mutex
		killedGens = map[int64]bool{}
		answers    = map[string]map[string]bool{} // key -> run ids answered
		budgets    = map[string]int{}             // key -> the payload that won
		keys       []string
	)
	// runs returns the run ids of key's handler, split into those that
	// count as executions and those a killed process made without any
	// caller getting their answer: it died between the handler and the
	// stored answer, the Guard's documented crash window, and the key ran
	// again after the lease.
	runs := func(key string) (counted, abandoned []string) {
		ids, err := rdb.LRange(ctx, runsKey(prefix, key), 0, -1).Result()
		if err != nil {
			t.Errorf("%s: runs: %v", key, err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			n, _ := strconv.ParseInt(id, 10, 64)
			if killedGens[runGen(n)] && !answers[key][id] {
				abandoned = append(abandoned, id)
			} else {
				counted = append(counted, id)
			}
		}
		return counted, abandoned
	}

	var (
		counts               tally
		answered             atomic.Int64
		transport, unavail   atomic.Int64
		killsMid, killsAfter int
		cut                  int64 // requests the killed processes had not answered
		abandonedRuns        int
	)
	began := time.Now()
	for r := range rounds {
		answered.Store(0)
		var roundDone atomic.Bool
		victim := r % replicas
		victimGen := gens[victim]
		killed := lb.killMidStorm(victim, procs[victim], &answered, &roundDone, func() {
			mu.Lock()
			killedGens[victimGen] = true
			mu.Unlock()
		})
		storm(t, r, func(i int, key string, v int) stormOutcome {
			if i < stormKeys {
				mu.Lock()
				keys = append(keys, key)
				mu.Unlock()
			}
			o, err := retryAsBuyer(func() (guardOutcome, error) { return postGuard(lb.URL(), key, 5000+v) },
				func(o guardOutcome) bool { return o.Kind == "ErrStorage" },
				func(tr bool) {
					if tr {
						transport.Add(1)
					} else {
						unavail.Add(1)
					}
				})
			if err != nil {
				return stormOutcome{kind: "no answer: " + err.Error()}
			}
			answered.Add(1)
			if o.Kind == "executed" || o.Kind == "replayed" {
				mu.Lock()
				if answers[key] == nil {
					answers[key] = map[string]bool{}
				}
				answers[key][o.ID] = true
				budgets[key] = 5000 + v
				mu.Unlock()
			}
			return stormOutcome{o.Kind, o.ID}
		}, func(key string) int {
			counted, abandoned := runs(key)
			abandonedRuns += len(abandoned)
			return len(counted)
		}, &counts)
		roundDone.Store(true)
		if k := <-killed; k.at.IsZero() {
			killsAfter++
		} else {
			killsMid++
			cut += k.unanswered
		}
		start(victim)
	}
	if killsMid == 0 {
		t.Errorf("no kill landed while a storm ran (%d after)", killsAfter)
	}

	// Every key again through the balancer: the stored answer.
	replays := 0
	for _, key := range keys {
		mu.Lock()
		want, budget := answers[key], budgets[key]
		mu.Unlock()
		o, err := retryAsBuyer(func() (guardOutcome, error) { return postGuard(lb.URL(), key, budget) },
			func(o guardOutcome) bool { return o.Kind == "ErrStorage" }, func(bool) {})
		switch {
		case err != nil:
			t.Errorf("%s: retry: %v", key, err)
		case o.Kind != "replayed" || !want[o.ID] || len(want) != 1:
			t.Errorf("%s: retry answered %+v; the storm's callers got %v", key, o, want)
		default:
			replays++
		}
	}
	figure(t, "replicas: Guard processes on redisstore", "%d processes behind a round-robin balancer, lease %d ms, %d rounds x %d callers on %d keys (70/30 payloads), one process SIGKILLed per round (%d mid-storm, %d requests unanswered; %d after) and restarted, in %v: each key executed once by the processes that lived, and %d runs of a killed process (handler ran, no answer stored: the documented crash window) ran again after the lease; %s; retries: %d after a transport failure (%d answered 502 by the balancer), %d after SERVICE_UNAVAILABLE, all answered; %d later retries replayed the one answer the storm's callers got",
		replicas, leaseMs, rounds, stormCallers, stormKeys, killsMid, cut, killsAfter, time.Since(began).Round(10*time.Millisecond),
		abandonedRuns, counts.String(), transport.Load(), lb.failed.Load(), unavail.Load(), replays)
}
