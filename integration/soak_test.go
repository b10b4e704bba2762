package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/idem"
)

// The soak (issue 7, part 6): the reference seller in Postgres mode, in
// this process, under a Go load generator over MCP (streamable HTTP) for
// IDEM_RELIABILITY_SOAK (20 s bounded, 10 min with the chaos tag), with
// IDEM_RELIABILITY_SOAK_RETRY_PERCENT (10) of the requests being retries of
// earlier answered keys, a quarter of the fresh ones with a webhook, and a
// sweeper running: the seller's own (every minute) plus one every 2 s, with
// a filler that keeps adding expired tombstones for it to delete.
//
// Checked at the end: no error answer; every retry answered replayed with
// its original answer, byte for byte apart from context and replayed;
// media buys = stored keys = fresh answers exactly; every webhook delivered
// once; every expired tombstone swept and no live key; the Go heap after
// GC and the goroutine count flat between the first and the last quarter;
// goroutines back to their level before the seller once it is closed.
//
// Not parallel: it reads this process's heap and goroutine count.
func TestReliabilitySoak(t *testing.T) {
	ctx := context.Background()
	duration := durationKnob("SOAK", 20*time.Second, 10*time.Minute)
	retryPercent := knob("SOAK_RETRY_PERCENT", 10, 10)
	workers := knob("SOAK_WORKERS", 4, 4)
	every := max(duration/20, time.Second) // 20 samples

	pool := newSchema(t)
	baselineGoroutines := runtime.NumGoroutine()
	var deliveries atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		deliveries.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()
	var warnings, sellerSwept atomic.Int64
	s, err := seller.New(ctx, seller.Config{
		Tokens: sellertest.Tokens(), DB: pool, AllowLoopbackWebhooks: true,
		Idempotency: &idem.Config{Limiter: idem.Unlimited},
		Logger:      slog.New(countingHandler{slog.NewTextHandler(io.Discard, nil), &warnings, &sellerSwept}),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	srv := httptest.NewServer(s.Handler())
	url := srv.URL + "/mcp"

	// The sweeper and the tombstone filler.
	sweeper, err := idem.NewStore(nil) // the seller's retention (24 h)
	if err != nil {
		t.Fatal(err)
	}
	var junkInserted, swept atomic.Int64
	stopBackground := make(chan struct{})
	var background sync.WaitGroup
	background.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopBackground:
				return
			case <-tick.C:
			}
			tag, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (principal_id, key, operation, request_hash, response, created_at, expires_at)
				SELECT 'expired-tombstones', 'expired-junk-' || $1::text || '-' || lpad(g::text, 8, '0'), 'create_media_buy',
				       sha256(g::text::bytea), '{}'::bytea, now() - interval '50 hours', now() - interval '49 hours'
				FROM generate_series(1, 500) AS g`, strconv.Itoa(i))
			if err != nil {
				t.Errorf("filler: %v", err)
				return
			}
			junkInserted.Add(tag.RowsAffected())
		}
	})
	background.Go(func() {
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopBackground:
				return
			case <-tick.C:
			}
			n, err := sweeper.Sweep(ctx, pool)
			if err != nil {
				t.Errorf("sweep: %v", err)
				return
			}
			swept.Add(int64(n))
		}
	})

	// The samples.
	type sample struct {
		at                time.Duration
		heap, rss         uint64
		goroutines, conns int
		requests          int64
	}
	var samples []sample
	var requests atomic.Int64
	start := time.Now()
	take := func() sample {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return sample{at: time.Since(start), heap: m.HeapAlloc, rss: rssBytes(), goroutines: runtime.NumGoroutine(),
			conns: int(pool.Stat().TotalConns()), requests: requests.Load()}
	}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				samples = append(samples, take())
			}
		}
	}()

	// The load.
	type answered struct {
		args map[string]any
		body string // the answer without context and replayed
	}
	var (
		ringMu     sync.Mutex
		ring       = make([]answered, 0, 1024)
		fresh      atomic.Int64
		retries    atomic.Int64
		mismatches atomic.Int64
		failures   atomic.Int64
		withHook   atomic.Int64
		firstFail  atomic.Pointer[string]
	)
	fail := func(s string) {
		failures.Add(1)
		firstFail.CompareAndSwap(nil, &s)
	}
	deadline := time.Now().Add(duration)
	sessions := make([]*mcp.ClientSession, workers)
	for w := range sessions {
		sessions[w] = sellertest.Connect(t, url, sellertest.Token)
	}
	var load sync.WaitGroup
	for w := range workers {
		load.Go(func() {
			cs := sessions[w]
			for n := 0; time.Now().Before(deadline); n++ {
				requests.Add(1)
				ringMu.Lock()
				var old answered
				retry := len(ring) > 0 && rand.IntN(100) < retryPercent
				if retry {
					old = ring[rand.IntN(len(ring))]
				}
				ringMu.Unlock()
				if retry {
					args := cloneArgs(old.args)
					args["context"] = map[string]any{"correlation_id": fmt.Sprintf("retry-%d-%d", w, n)}
					a, err := callTool(cs, "create_media_buy", args)
					retries.Add(1)
					switch {
					case err != nil || a.IsError:
						fail(fmt.Sprintf("retry: %v %s", err, a.Raw))
					case a.Body["replayed"] != true || stripEnvelope(a.Body) != old.body:
						mismatches.Add(1)
						fail(fmt.Sprintf("retry answered %s, the original was %s", a.Raw, old.body))
					}
					continue
				}
				key := fmt.Sprintf("soak-w%d-%08d-%s", w, n, randomID(4))
				push := ""
				if n%4 == 0 {
					push = receiver.URL + "/hook/" + key
				}
				args := sellertest.CreateArgs(key, float64(1000+n%5000), push, fmt.Sprintf("first-%d-%d", w, n))
				a, err := callTool(cs, "create_media_buy", args)
				if err != nil || a.IsError || a.Body["replayed"] != false {
					fail(fmt.Sprintf("fresh: %v %s", err, a.Raw))
					continue
				}
				fresh.Add(1)
				if push != "" {
					withHook.Add(1)
				}
				e := answered{args: args, body: stripEnvelope(a.Body)}
				ringMu.Lock()
				if len(ring) < cap(ring) {
					ring = append(ring, e)
				} else {
					ring[rand.IntN(len(ring))] = e
				}
				ringMu.Unlock()
			}
		})
	}
	load.Wait()
	elapsed := time.Since(start)
	close(stopSampling)
	<-sampled
	loadEnd := take()
	for _, cs := range sessions {
		_ = cs.Close()
	}

	// Drain: every webhook delivered; then one last sweep.
	waitFor(t, func() bool {
		return count(t, pool, `SELECT count(*) FROM `+sellerWebhooks+` WHERE w.state <> 'completed'`) == 0
	})
	close(stopBackground)
	background.Wait()
	n, err := sweeper.Sweep(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	swept.Add(int64(n))
	srv.Close()
	s.Close()
	http.DefaultClient.CloseIdleConnections()

	// Counts.
	if f := failures.Load(); f != 0 {
		t.Errorf("%d failed requests; the first: %s", f, *firstFail.Load())
	}
	buys := count(t, pool, `SELECT count(*) FROM seller_media_buys WHERE principal_id = $1`, sellertest.Principal)
	keysStored := count(t, pool, `SELECT count(*) FROM idempotency_keys WHERE principal_id = $1`, sellertest.Principal)
	events := count(t, pool, `SELECT count(*) FROM `+sellerWebhooks)
	junkLeft := count(t, pool, `SELECT count(*) FROM idempotency_keys WHERE principal_id = 'expired-tombstones'`)
	// At the full size this join costs more than jit_above_cost, and a
	// Postgres built with JIT but without its LLVM library (the test
	// environment's local/postgres:15) then fails it with SQLSTATE 58P01.
	orphans := countWithoutJIT(t, pool, `SELECT count(*) FROM seller_media_buys b WHERE NOT EXISTS (
		SELECT 1 FROM idempotency_keys k WHERE convert_from(k.response, 'UTF8')::jsonb->>'media_buy_id' = b.media_buy_id)`)
	if int64(buys) != fresh.Load() || int64(keysStored) != fresh.Load() || orphans != 0 {
		t.Errorf("%d fresh answers, %d media buys, %d stored keys, %d buys without a stored answer; want equal counts and 0", fresh.Load(), buys, keysStored, orphans)
	}
	if int64(events) != withHook.Load() || deliveries.Load() != int64(events) {
		t.Errorf("%d fresh requests with a webhook, %d outbox events, %d deliveries; want the same three", withHook.Load(), events, deliveries.Load())
	}
	// Both sweepers delete tombstones: the test's and the seller's own.
	if junkLeft != 0 || swept.Load()+sellerSwept.Load() != junkInserted.Load() {
		t.Errorf("%d expired tombstones inserted, %d swept (%d by the seller's sweeper), %d left", junkInserted.Load(), swept.Load()+sellerSwept.Load(), sellerSwept.Load(), junkLeft)
	}

	// Flatness: compare the first and the last quarter of the samples.
	samples = append(samples, loadEnd)
	if len(samples) < 4 {
		t.Fatalf("only %d samples", len(samples))
	}
	q := len(samples) / 4
	early, late := samples[:q], samples[len(samples)-q:]
	maxOf := func(ss []sample, f func(sample) uint64) uint64 {
		var m uint64
		for _, s := range ss {
			m = max(m, f(s))
		}
		return m
	}
	heap := func(s sample) uint64 { return s.heap }
	gor := func(s sample) uint64 { return uint64(s.goroutines) }
	rss := func(s sample) uint64 { return s.rss }
	if e, l := maxOf(early, heap), maxOf(late, heap); l > 2*e && l > e+32<<20 {
		t.Errorf("heap after GC grew from %d MiB (first quarter) to %d MiB (last quarter)", e>>20, l>>20)
	}
	if e, l := maxOf(early, gor), maxOf(late, gor); l > e+20 {
		t.Errorf("goroutines grew from %d (first quarter) to %d (last quarter)", e, l)
	}
	var after int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= baselineGoroutines+5 || time.Now().After(deadline) {
			break
		}
	}
	if after > baselineGoroutines+5 {
		t.Errorf("%d goroutines after the seller closed, %d before it started", after, baselineGoroutines)
	}

	var trace []string
	for _, s := range samples {
		trace = append(trace, fmt.Sprintf("%ds:%dMiB/%dMiB/%dg", int(s.at.Seconds()), s.heap>>20, s.rss>>20, s.goroutines))
	}
	race := ""
	if raceEnabled {
		race = " (under -race)"
	}
	figure(t, "soak", "%v%s, %d workers, %d%% retries, sweeper every 2 s (+ the seller's every minute) with 500 expired tombstones added every second: %d requests (%.0f/s): %d fresh, %d retries (%d answered other than the original), %d failed; media buys %d = stored keys %d = fresh answers %d; %d webhooks for %d events; tombstones %d inserted, %d swept (%d of them by the seller's sweeper), %d left; %d seller warnings; heap after GC (max) %d MiB first quarter, %d MiB last; RSS (max) %d MiB first quarter, %d MiB last; goroutines (max) %d first quarter, %d last, %d before the seller started, %d after it closed; samples (time:heap/RSS/goroutines): %s",
		duration, race, workers, retryPercent, requests.Load(), float64(requests.Load())/elapsed.Seconds(), fresh.Load(), retries.Load(), mismatches.Load(), failures.Load(),
		buys, keysStored, fresh.Load(), deliveries.Load(), events, junkInserted.Load(), swept.Load()+sellerSwept.Load(), sellerSwept.Load(), junkLeft, warnings.Load(),
		maxOf(early, heap)>>20, maxOf(late, heap)>>20, maxOf(early, rss)>>20, maxOf(late, rss)>>20,
		maxOf(early, gor), maxOf(late, gor), baselineGoroutines, after, strings.Join(trace, " "))
}

// countWithoutJIT is count with JIT compilation off for the one query,
// which it does not need.
func countWithoutJIT(t testing.TB, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SET LOCAL jit = off`); err != nil {
			return err
		}
		return tx.QueryRow(context.Background(), query, args...).Scan(&n)
	})
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// stripEnvelope is an answer without the fields that change per request
// (context, replayed), as canonical JSON.
func stripEnvelope(body map[string]any) string {
	m := make(map[string]any, len(body))
	for k, v := range body {
		if k != "context" && k != "replayed" {
			m[k] = v
		}
	}
	raw, _ := json.Marshal(m) // map keys are sorted
	return string(raw)
}

func cloneArgs(args map[string]any) map[string]any {
	out := make(map[string]any, len(args))
	for k, v := range args {
		out[k] = v
	}
	return out
}

// rssBytes reads this process's resident set size from /proc.
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// countingHandler counts the seller's warnings and errors, and the rows its
// own sweeper reports deleting.
type countingHandler struct {
	slog.Handler
	warnings, swept *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warnings.Add(1)
	}
	if r.Message == "swept idempotency keys" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "deleted" {
				h.swept.Add(a.Value.Int64())
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}
