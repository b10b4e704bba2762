package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
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

// The crash matrix (issue 7, part 1): a child process runs a request and is
// killed with SIGKILL at a crash point; a retry with the same key must run
// the work exactly once overall and answer correctly.
//
// A crash point is a step of the request as the database sees it, observed
// in the child by a pgx query tracer (stepTracer), which runs synchronously
// in the request's goroutine; the library has no hook of its own:
//
//	before_claim    the transaction is open (BEGIN sent), the claim
//	                statement is not sent yet
//	after_claim     the claim statement returned: the key's row exists,
//	                uncommitted; the handler has not written anything
//	after_write     the handler's business write returned (the seller: the
//	                media buy and its outbox event), uncommitted
//	before_commit   the statement storing the response and COMMIT are about
//	                to be sent, in one batch (RunInTx owns the connection and
//	                pipelines them, so no state lies between the two);
//	                nothing is committed yet
//	after_commit    COMMIT returned; RunInTx has not returned to its caller
//	after_delivery  (seller) the webhook was POSTed and answered 2xx; the
//	                outbox row is not marked delivered yet
//
// The child prints each point it passes ("STAGE name") and, at the target
// point, pauses for a random time in [0, 2j]; the parent kills it a random
// time in [0, j] after reading the target's line. So most kills land at the
// point itself and the rest somewhere in the step after it; the lines the
// child printed before it died tell which, and the figures count both.

const chaosChildEnv = "IDEM_CHAOS_CHILD"

// chaosSpec is what a crash-test child runs, passed as JSON in
// IDEM_CHAOS_CHILD.
type chaosSpec struct {
	Mode      string // "runintx" or "seller"
	DB        string
	Principal string
	Key       string
	Budget    int
	Point     string
	PauseMs   int // the pause at Point: random in [0, PauseMs]
	Tokens    map[string]string
}

type crashPoint struct {
	name  string
	step  string
	start bool // before the statement is sent, rather than after it returned
}

var runInTxPoints = []crashPoint{
	{"before_claim", stepClaim, true},
	{"after_claim", stepClaim, false},
	{"after_write", stepWrite, false},
	{"before_commit", stepStore, true},
	{"after_commit", stepCommit, false},
}

var sellerPoints = []crashPoint{
	{"before_claim", stepClaim, true},
	{"after_claim", stepClaim, false},
	{"after_write", stepOutbox, false},
	{"before_commit", stepStore, true},
	{"after_commit", stepCommit, false},
	{"after_delivery", stepDelivered, true},
}

func pointIndex(points []crashPoint, name string) int {
	return slices.IndexFunc(points, func(p crashPoint) bool { return p.name == name })
}

// runChaosChild is the child's main (called from TestMain). It never
// returns: the parent kills it.
func runChaosChild(raw string) {
	var spec chaosSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "chaos child:", err)
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "chaos child:", err)
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	points := runInTxPoints
	if spec.Mode == "seller" {
		points = sellerPoints
	}
	var armed, reachedTarget atomic.Bool
	// The request's connection: the one that claims the key. River runs
	// its own transactions on the same pool; their commits and inserts are
	// not the request's.
	var reqConn atomic.Pointer[pgx.Conn]
	hook := func(_ context.Context, conn *pgx.Conn, step string, start bool, args []any, err error) {
		if !armed.Load() {
			return
		}
		if step == stepClaim && start {
			reqConn.Store(conn)
		}
		if (step == stepCommit || step == stepOutbox) && conn != reqConn.Load() {
			return
		}
		if step == stepBuyInsert && start && len(args) > 0 {
			fmt.Printf("BUY %v\n", args[0])
		}
		for _, p := range points {
			if p.step != step || p.start != start || (!start && err != nil) {
				continue
			}
			fmt.Printf("STAGE %s\n", p.name)
			if p.name == spec.Point && reachedTarget.CompareAndSwap(false, true) && spec.PauseMs > 0 {
				time.Sleep(time.Duration(rand.IntN(spec.PauseMs+1)) * time.Millisecond)
			}
		}
	}
	ctx := context.Background()
	pool, err := tracedPool(ctx, spec.DB, 8, hook)
	if err != nil {
		fail(err)
	}
	switch spec.Mode {
	case "runintx":
		s, err := idem.NewStore(&idem.Config{Limiter: idem.Unlimited})
		if err != nil {
			fail(err)
		}
		armed.Store(true)
		res, err := idem.RunInTx(ctx, s, pool, request(spec.Principal, spec.Key, chaosPayload(spec.Budget)), chaosWrite(spec.Principal, spec.Key, spec.Budget))
		fmt.Printf("DONE id=%d replayed=%v err=%v\n", res.Value.ID, res.Replayed, err)
	case "seller":
		s, err := seller.New(ctx, seller.Config{
			Tokens: spec.Tokens, DB: pool, AllowLoopbackWebhooks: true,
			Idempotency: &idem.Config{Limiter: idem.Unlimited}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			fail(err)
		}
		s.Start()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail(err)
		}
		armed.Store(true) // after the migrations, whose transactions are not the request's
		fmt.Printf("URL http://%s/mcp\n", ln.Addr())
		go func() { _ = http.Serve(ln, s.Handler()) }()
	default:
		fail(fmt.Errorf("unknown mode %q", spec.Mode))
	}
	time.Sleep(time.Hour) // the parent kills us before this ends
	os.Exit(3)
}

// startChaosChild runs this test binary as a crash-matrix child with spec.
func startChaosChild(spec chaosSpec) (*child, error) {
	raw, _ := json.Marshal(spec)
	return startChild(selfCommand(chaosChildEnv, string(raw)))
}

// reached is the last crash point the child passed, as an index into
// points (-1 for none).
func reached(points []crashPoint, lines []string) int {
	last := -1
	for _, l := range lines {
		if name, ok := strings.CutPrefix(l, "STAGE "); ok {
			last = max(last, pointIndex(points, name))
		}
	}
	return last
}

// waitSessionsGone waits until no session with application_name app is
// left on the server.
func waitSessionsGone(ctx context.Context, pool *pgxpool.Pool, app string) error {
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sessions of the killed child (%s) still open after 60 s", n, app)
		}
	}
}

// runJobs runs jobs on n workers and reports every error.
func runJobs[J any](t *testing.T, n int, jobs []J, run func(worker int, j J) error) {
	t.Helper()
	ch := make(chan J)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for j := range ch {
				if err := run(w, j); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
}

func jitter(ms int) time.Duration { return time.Duration(rand.IntN(ms+1)) * time.Millisecond }

// Kill jitter: the parent kills within killJitterMs of the target line; the
// child pauses there for up to twice that.
const killJitterMs = 20

func TestReliabilityCrashMatrix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kills := knob("KILLS", 4, 20)
	pool := chaosSchema(t)
	dsn := pool.Config().ConnString()
	s := newStore(t, nil)

	type job struct {
		point crashPoint
		i     int
	}
	var jobs []job
	for i := range kills {
		for _, p := range runInTxPoints {
			jobs = append(jobs, job{p, i})
		}
	}
	var landed, outcome tally
	start := time.Now()
	runJobs(t, 2, jobs, func(_ int, j job) error {
		key := fmt.Sprintf("crash-%s-%03d-%s", j.point.name, j.i, randomID(4))
		budget := 1000 + j.i
		c, err := startChaosChild(chaosSpec{Mode: "runintx", DB: dsn, Principal: "alice", Key: key, Budget: budget, Point: j.point.name, PauseMs: 2 * killJitterMs})
		if err != nil {
			return err
		}
		if _, err := c.waitLine("STAGE "+j.point.name, 60*time.Second); err != nil {
			c.kill()
			return fmt.Errorf("%s: %w", key, err)
		}
		time.Sleep(jitter(killJitterMs))
		lines := c.kill()
		at := reached(runInTxPoints, lines)
		target := pointIndex(runInTxPoints, j.point.name)
		if at == target {
			landed.add(j.point.name + ":at")
		} else {
			landed.add(j.point.name + ":later")
		}

		req := request("alice", key, chaosPayload(budget))
		res, attempts, err := retryUntilAnswered(ctx, s, pool, req, chaosWrite("alice", key, budget))
		if err != nil {
			return fmt.Errorf("%s (killed after %s): retry failed after %d attempts: %v", key, runInTxPoints[at].name, attempts, err)
		}
		if res.Replayed {
			outcome.add(j.point.name + ":replayed")
		} else {
			outcome.add(j.point.name + ":executed")
		}
		switch {
		case at >= pointIndex(runInTxPoints, "after_commit") && !res.Replayed:
			return fmt.Errorf("%s: the child committed, but the retry ran the work again", key)
		case at < pointIndex(runInTxPoints, "before_commit") && res.Replayed:
			return fmt.Errorf("%s: the child never sent COMMIT (last point %s), but the retry replayed %+v", key, runInTxPoints[at].name, res.Value)
		}
		var id int64
		var b int
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) OVER (), id, budget FROM chaos_buys WHERE principal = 'alice' AND idem_key = $1`, key).Scan(&n, &id, &b); err != nil {
			return fmt.Errorf("%s: business row: %v", key, err)
		}
		if n != 1 || res.Value != (chaosBuy{ID: id, Budget: b}) || b != budget {
			return fmt.Errorf("%s: %d business rows; the retry answered %+v, the row is {%d %d}", key, n, res.Value, id, b)
		}
		for _, l := range lines {
			if strings.HasPrefix(l, "DONE id=") && !strings.HasPrefix(l, fmt.Sprintf("DONE id=%d ", id)) {
				return fmt.Errorf("%s: the child answered %q, the retry %+v", key, l, res.Value)
			}
		}
		again, err := idem.RunInTx(ctx, s, pool, req, chaosWrite("alice", key, budget))
		if err != nil || !again.Replayed || !bytes.Equal(again.Response, res.Response) {
			return fmt.Errorf("%s: second retry = %+v, %v; want the replay of %s", key, again, err, res.Response)
		}
		return nil
	})
	rows := invariants(t, pool)
	if rows != len(jobs) {
		t.Errorf("%d business rows for %d keys", rows, len(jobs))
	}
	figure(t, "crash matrix (RunInTx)", "%d points x %d kills = %d SIGKILLs in %v; business rows %d for %d keys (0 duplicate executions, 0 lost answers); kills landed: %s; retries: %s",
		len(runInTxPoints), kills, len(jobs), time.Since(start).Round(time.Second), rows, len(jobs), landed.String(), outcome.String())
}

// hookReceiver records webhook deliveries per path.
type hookReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string][]delivery
}

type delivery struct {
	eventKey, buyID string
	complete        bool // the body was a whole JSON object
}

func newHookReceiver(t testing.TB) *hookReceiver {
	r := &hookReceiver{got: map[string][]delivery{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var m struct {
			Key    string `json:"idempotency_key"`
			Result struct {
				MediaBuyID string `json:"media_buy_id"`
			} `json:"result"`
		}
		d := delivery{complete: err == nil && json.Unmarshal(body, &m) == nil}
		d.eventKey, d.buyID = m.Key, m.Result.MediaBuyID
		r.mu.Lock()
		r.got[req.URL.Path] = append(r.got[req.URL.Path], d)
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) URL(path string) string { return r.srv.URL + path }

func (r *hookReceiver) deliveries(path string) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got[path])
}

func (r *hookReceiver) all() map[string][]delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]delivery, len(r.got))
	for k, v := range r.got {
		out[k] = slices.Clone(v)
	}
	return out
}

type bearerToken string

func (b bearerToken) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

// connectMCP is sellertest.Connect for goroutines: it returns the error.
func connectMCP(url, token string) (*mcp.ClientSession, error) {
	c := mcp.NewClient(&mcp.Implementation{Name: "reliability", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: url, HTTPClient: &http.Client{Transport: bearerToken(token)}, DisableStandaloneSSE: true,
	}, nil)
}

// callTool is sellertest.TryCall with a bound.
func callTool(cs *mcp.ClientSession, tool string, args map[string]any) (sellertest.Answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return sellertest.Answer{}, err
	}
	raw, _ := json.Marshal(res.StructuredContent)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		return sellertest.Answer{}, fmt.Errorf("structuredContent %s: %v", raw, err)
	}
	return sellertest.Answer{IsError: res.IsError, Body: body, Raw: string(raw)}, nil
}

func errorCode(a sellertest.Answer) string {
	e, _ := a.Body["adcp_error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// inProcessSeller is a seller in this process on pool, for retries after a
// crash; close stops it.
func inProcessSeller(pool *pgxpool.Pool, log *slog.Logger) (url string, close func(), err error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := seller.New(context.Background(), seller.Config{
		Tokens: sellertest.Tokens(), DB: pool, AllowLoopbackWebhooks: true,
		Idempotency: &idem.Config{Limiter: idem.Unlimited}, Logger: log,
	})
	if err != nil {
		return "", nil, err
	}
	s.Start()
	srv := httptest.NewServer(s.Handler())
	return srv.URL + "/mcp", func() { srv.Close(); s.Close() }, nil
}

// The same matrix for the reference seller and its webhook outbox: the
// child is the seller (in a test binary, on a traced pool), the request
// comes over MCP with a push URL, and the retry goes to a fresh seller on the
// same database. Besides exactly one media buy per key: never a webhook for
// a buy that rolled back, never two different events for one buy. An event
// the child POSTed but had not marked delivered is sent again, with the
// same event idempotency_key (at-least-once delivery, deduplicated by the
// receiver); the figures count those.
func TestReliabilityOutboxCrashMatrix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kills := knob("OUTBOX_KILLS", 3, 20)
	const workers = 2
	// A schema per worker: a retry seller's dispatcher must not deliver
	// another job's event before that job's child reaches its point.
	pools := make([]*pgxpool.Pool, workers)
	for w := range pools {
		pools[w] = newSchema(t)
		_, stop, err := inProcessSeller(pools[w], nil) // applies the seller's migrations once
		if err != nil {
			t.Fatal(err)
		}
		stop()
	}
	receiver := newHookReceiver(t)

	type job struct {
		point crashPoint
		i     int
	}
	var jobs []job
	for i := range kills {
		for _, p := range sellerPoints {
			jobs = append(jobs, job{p, i})
		}
	}
	var landed, outcome tally
	var mu sync.Mutex
	rolledBack := map[string]bool{} // media buys a child inserted that never committed
	redelivered := 0
	start := time.Now()
	runJobs(t, workers, jobs, func(w int, j job) error {
		began := time.Now()
		var phases []string
		phase := func(name string) {
			phases = append(phases, fmt.Sprintf("%s@%v", name, time.Since(began).Round(time.Millisecond)))
		}
		defer func() {
			if d := time.Since(began); d > 5*time.Second {
				t.Logf("slow job %s #%d: %v: %v", j.point.name, j.i, d.Round(time.Millisecond), phases)
			}
		}()
		pool := pools[w]
		dsn := pool.Config().ConnString()
		key := fmt.Sprintf("outbox-%s-%03d-%s", j.point.name, j.i, randomID(4))
		path := "/op-" + key
		app := "chaos-" + randomID(6) // names the child's sessions in pg_stat_activity
		c, err := startChaosChild(chaosSpec{Mode: "seller", DB: dsn + "&application_name=" + app, Point: j.point.name, PauseMs: 2 * killJitterMs,
			Tokens: map[string]string{sellertest.Token: sellertest.Principal}})
		if err != nil {
			return err
		}
		line, err := c.waitLine("URL ", 60*time.Second)
		if err != nil {
			c.kill()
			return err
		}
		cs, err := connectMCP(strings.TrimPrefix(line, "URL "), sellertest.Token)
		if err != nil {
			c.kill()
			return err
		}
		type answer struct {
			a   sellertest.Answer
			err error
		}
		first := make(chan answer, 1)
		go func() {
			a, err := callTool(cs, "create_media_buy", sellertest.CreateArgs(key, 5000, receiver.URL(path), "first"))
			first <- answer{a, err}
		}()
		if _, err := c.waitLine("STAGE "+j.point.name, 60*time.Second); err != nil {
			c.kill()
			return fmt.Errorf("%s: %w", key, err)
		}
		time.Sleep(jitter(killJitterMs))
		phase("point")
		lines := c.kill()
		phase("killed")
		_ = cs.Close()
		firstAnswer := <-first
		phase("first answer")
		at := reached(sellerPoints, lines)
		if at == pointIndex(sellerPoints, j.point.name) {
			landed.add(j.point.name + ":at")
		} else {
			landed.add(j.point.name + ":later")
		}
		var childBuys []string
		for _, l := range lines {
			if id, ok := strings.CutPrefix(l, "BUY "); ok {
				childBuys = append(childBuys, id)
			}
		}
		// The dead child's sessions may still be running a statement
		// (Postgres notices a dead client only when it next talks to it),
		// for example the dispatcher's lease on the event; wait for them.
		if err := waitSessionsGone(ctx, pool, app); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		phase("sessions gone")
		// A delivery job the dead child was running stays "running" until
		// River's rescuer gives it back (RescueStuckJobsAfter); do what
		// the rescuer does now, and make a retry due at once.
		if _, err := pool.Exec(ctx, `UPDATE river_job SET state = 'available', scheduled_at = now() WHERE id IN (
			SELECT w.id FROM `+sellerWebhooks+` WHERE w.state IN ('running', 'retryable') AND w.media_buy_id = ANY($1))`, childBuys); err != nil {
			return err
		}

		url, stop, err := inProcessSeller(pool, nil)
		if err != nil {
			return err
		}
		defer stop()
		rcs, err := connectMCP(url, sellertest.Token)
		if err != nil {
			return err
		}
		defer rcs.Close()
		var retry sellertest.Answer
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			retry, err = callTool(rcs, "create_media_buy", sellertest.CreateArgs(key, 5000, receiver.URL(path), "retry"))
			if err != nil {
				return fmt.Errorf("%s: retry: %v", key, err)
			}
			if code := errorCode(retry); code != "IDEMPOTENCY_IN_FLIGHT" && code != "SERVICE_UNAVAILABLE" || time.Now().After(deadline) {
				break
			}
		}
		phase("retried")
		if retry.IsError {
			return fmt.Errorf("%s (killed after %s): retry answered %s", key, sellerPoints[at].name, retry.Raw)
		}
		buy, _ := retry.Body["media_buy_id"].(string)
		replayed := retry.Body["replayed"] == true
		if replayed {
			outcome.add(j.point.name + ":replayed")
		} else {
			outcome.add(j.point.name + ":executed")
		}
		switch {
		case at >= pointIndex(sellerPoints, "after_commit") && !replayed:
			return fmt.Errorf("%s: the child committed, but the retry made a new media buy %s", key, buy)
		case at < pointIndex(sellerPoints, "before_commit") && replayed:
			return fmt.Errorf("%s: the child never sent COMMIT, but the retry replayed %s", key, buy)
		case firstAnswer.err == nil && !firstAnswer.a.IsError && firstAnswer.a.Body["media_buy_id"] != buy:
			return fmt.Errorf("%s: the child answered %s, the retry %s", key, firstAnswer.a.Raw, retry.Raw)
		}
		// Wait until the buy's event is delivered, then check what arrived.
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var pending int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+sellerWebhooks+` WHERE w.media_buy_id = $1 AND w.state <> 'completed'`, buy).Scan(&pending); err != nil {
				return err
			}
			if pending == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: the event of %s was not delivered within 60s", key, buy)
			}
		}
		phase("delivered")
		var buys, events, stored int
		if err := pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM seller_media_buys WHERE media_buy_id = $1),
			(SELECT count(*) FROM `+sellerWebhooks+` WHERE w.media_buy_id = $1),
			(SELECT count(*) FROM idempotency_keys WHERE principal_id = $2 AND key = $3
			   AND convert_from(response, 'UTF8')::jsonb->>'media_buy_id' = $1)`, buy, sellertest.Principal, key).Scan(&buys, &events, &stored); err != nil {
			return err
		}
		if buys != 1 || events != 1 || stored != 1 {
			return fmt.Errorf("%s: media buy %s: %d rows, %d webhook jobs, %d stored answers; want 1 each", key, buy, buys, events, stored)
		}
		got := receiver.deliveries(path)
		keys := map[string]bool{}
		for _, d := range got {
			if !d.complete {
				continue // a POST cut off by the kill; the dispatcher sends it again
			}
			if d.buyID != buy {
				return fmt.Errorf("%s: a webhook for media buy %s arrived; the committed buy is %s", key, d.buyID, buy)
			}
			keys[d.eventKey] = true
		}
		if len(keys) != 1 || len(got) > 2 {
			return fmt.Errorf("%s: %d deliveries with %d distinct event keys; want 1 event, delivered at most twice", key, len(got), len(keys))
		}
		mu.Lock()
		redelivered += len(got) - 1
		for _, id := range childBuys {
			if id != buy {
				rolledBack[id] = true
			}
		}
		mu.Unlock()
		return nil
	})

	// No rolled-back buy exists or got a webhook; every committed buy has
	// its stored answer and one event.
	var committed []string
	for _, pool := range pools {
		var orphans int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM seller_media_buys b WHERE NOT EXISTS (
			SELECT 1 FROM idempotency_keys k WHERE convert_from(k.response, 'UTF8')::jsonb->>'media_buy_id' = b.media_buy_id)
			OR (SELECT count(*) FROM `+sellerWebhooks+` WHERE w.media_buy_id = b.media_buy_id) <> 1`).Scan(&orphans); err != nil {
			t.Fatal(err)
		}
		if orphans != 0 {
			t.Errorf("%d media buys without their stored answer or with other than one event", orphans)
		}
		rows, err := pool.Query(ctx, `SELECT media_buy_id FROM seller_media_buys`)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		committed = append(committed, ids...)
	}
	for id := range rolledBack {
		if slices.Contains(committed, id) {
			t.Errorf("media buy %s was rolled back by the crash but exists", id)
		}
	}
	webhooks := 0
	for path, ds := range receiver.all() {
		for _, d := range ds {
			webhooks++
			if d.complete && rolledBack[d.buyID] {
				t.Errorf("%s: a webhook for the rolled-back media buy %s", path, d.buyID)
			}
		}
	}
	if len(committed) != len(jobs) {
		t.Errorf("%d media buys for %d keys", len(committed), len(jobs))
	}
	figure(t, "crash matrix (seller + outbox)", "%d points x %d kills = %d SIGKILLs in %v; media buys %d for %d keys; %d buys rolled back by the kill, 0 of them with a webhook; %d webhook POSTs, %d of them a resend of the same event (at-least-once), 0 buys with two distinct events; kills landed: %s; retries: %s",
		len(sellerPoints), kills, len(jobs), time.Since(start).Round(time.Second), len(committed), len(jobs), len(rolledBack), webhooks, redelivered, landed.String(), outcome.String())
}
