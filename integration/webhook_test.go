package integration

// Exactly-once webhooks on a real Postgres: the webhook and
// webhook/riverdelivery modules, with River's own tables migrated into the
// test's schema (River follows the connection's search_path when
// river.Config.Schema is empty, as newSchema's pools set it).
//
//   - TestWebhookTransactionalEnqueue: the job commits with the request's
//     transaction, or not at all.
//   - TestWebhookRetriesSameBody: 503, 503, 200 → three attempts, one body,
//     three valid signatures with three nonces.
//   - TestWebhookGivesUp: permanent answers and the retry horizon end the
//     job after one attempt, dead and visible in river_job.
//   - TestWebhookTwoReplicas: two River clients on one queue deliver every
//     event once, never two attempts of one event at a time.
//   - TestWebhookReceiverLive: the buyer's Receiver, with keys fetched from
//     the seller's published JWKS, processes each event once although
//     every first answer is lost.
//   - TestReliabilityWebhookCrashMatrix: SIGKILL around commit and delivery.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/webhook"
	"github.com/adcp-go/idempotency/webhook/riverdelivery"
)

// whSigner is the seller's webhook signing key; crash children build the
// same one from the same seed.
func whSigner() *httpsig.Signer {
	s, err := httpsig.NewSigner(httpsig.ProfileWebhook, "seller-wh-1", ed25519.NewKeyFromSeed(bytes.Repeat([]byte{42}, ed25519.SeedSize)))
	if err != nil {
		panic(err)
	}
	return s
}

// whSender delivers to loopback test servers, retrying quickly.
func whSender() *webhook.Sender {
	s, err := webhook.NewSender(&webhook.SenderConfig{
		Signer:  whSigner(),
		URLs:    &webhook.URLPolicy{AllowLoopback: true},
		Retry:   webhook.RetryPolicy{Initial: 50 * time.Millisecond, Max: 400 * time.Millisecond},
		Timeout: time.Second,
	})
	if err != nil {
		panic(err)
	}
	return s
}

func whSellerKeys(t testing.TB) *httpsig.JWKS {
	jwk, err := whSigner().PublicJWK()
	if err != nil {
		t.Fatal(err)
	}
	set, err := httpsig.NewJWKS(jwk)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// riverSchema is newSchema plus River's tables and the business table of
// these tests (one row per executed request, tagged with its key).
func riverSchema(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := newSchema(t)
	ctx := context.Background()
	if err := riverdelivery.Migrate(ctx, pool); err != nil {
		t.Fatalf("riverdelivery.Migrate: %v", err)
	}
	if err := riverdelivery.Migrate(ctx, pool); err != nil { // idempotent
		t.Fatalf("riverdelivery.Migrate again: %v", err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE wh_buys (id bigserial PRIMARY KEY, idem_key text NOT NULL, budget int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return pool
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// riverConfig is a River client configuration for tests: fast polling,
// no start-up stagger, no logs.
func riverConfig(sender *webhook.Sender, queues ...string) *river.Config {
	workers := river.NewWorkers()
	river.AddWorker(workers, riverdelivery.NewWorker(sender))
	if len(queues) == 0 {
		queues = []string{river.QueueDefault}
	}
	qs := map[string]river.QueueConfig{}
	for _, q := range queues {
		qs[q] = river.QueueConfig{MaxWorkers: 8}
	}
	return &river.Config{
		Queues: qs, Workers: workers, Logger: quietLogger(), TestOnly: true,
		FetchCooldown: 10 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond,
	}
}

func startRiver(t testing.TB, pool *pgxpool.Pool, cfg *river.Config) *river.Client[pgx.Tx] {
	t.Helper()
	client, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(ctx)
	})
	return client
}

// whHit is one POST the sink received.
type whHit struct {
	body      []byte
	key       string
	nonce     string
	verifyErr error
	status    int
}

// whSink is a buyer endpoint that records every POST per path, verifies
// its signature against the seller's keys, answers as told, and tracks how
// many POSTs of one path are in flight at once.
type whSink struct {
	srv      *httptest.Server
	verifier *httpsig.Verifier
	mu       sync.Mutex
	hits     map[string][]whHit
	answer   map[string]func(n int) int // status for the n-th POST (1-based); default 200
	onFirst  map[string]func()          // runs when the first POST of a path arrives, before answering
	inflight map[string]int
	overlap  int // POSTs that arrived while another of the same path was in flight
}

func newWhSink(t testing.TB) *whSink {
	s := &whSink{
		verifier: httpsig.NewVerifier(httpsig.ProfileWebhook, whSellerKeys(t)),
		hits:     map[string][]whHit{}, answer: map[string]func(int) int{}, onFirst: map[string]func(){}, inflight: map[string]int{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *whSink) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // cut off (a killed sender)
	}
	v, verr := s.verifier.Verify(r.Context(), r, body)
	var ev struct {
		Key string `json:"idempotency_key"`
	}
	_ = json.Unmarshal(body, &ev)
	path := r.URL.Path
	s.mu.Lock()
	s.inflight[path]++
	if s.inflight[path] > 1 {
		s.overlap++
	}
	n := len(s.hits[path]) + 1
	answer, first := s.answer[path], s.onFirst[path]
	s.mu.Unlock()
	if n == 1 && first != nil {
		first()
	}
	time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond) // widen the window for overlaps
	status := http.StatusOK
	if answer != nil {
		status = answer(n)
	}
	h := whHit{body: body, key: ev.Key, verifyErr: verr, status: status}
	if v != nil {
		h.nonce = v.Params.Nonce
	}
	s.mu.Lock()
	s.hits[path] = append(s.hits[path], h)
	s.inflight[path]--
	s.mu.Unlock()
	w.WriteHeader(status)
}

func (s *whSink) URL(path string) string { return s.srv.URL + path }

func (s *whSink) set(path string, answer func(int) int, first func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if answer != nil {
		s.answer[path] = answer
	}
	if first != nil {
		s.onFirst[path] = first
	}
}

func (s *whSink) got(path string) []whHit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hits[path])
}

// whJob is a river_job row of a delivery.
type whJob struct {
	id       int64
	state    string
	attempt  int
	key, url string
	body     []byte
	errors   []rivertype.AttemptError
	by       []string
}

func whJobs(ctx context.Context, pool *pgxpool.Pool) ([]whJob, error) {
	rows, err := pool.Query(ctx, `SELECT id, state::text, attempt, args->>'idempotency_key', args->>'url', args->>'body',
		coalesce(array_to_json(errors), '[]')::text, coalesce(attempted_by, '{}') FROM river_job WHERE kind = $1 ORDER BY id`, riverdelivery.Kind)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []whJob
	for rows.Next() {
		var j whJob
		var body64, errs string
		if err := rows.Scan(&j.id, &j.state, &j.attempt, &j.key, &j.url, &body64, &errs, &j.by); err != nil {
			return nil, err
		}
		if j.body, err = base64.StdEncoding.DecodeString(body64); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(errs), &j.errors); err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// waitJobsFinal waits until every delivery job is completed, cancelled or
// discarded, and returns them.
func waitJobsFinal(t testing.TB, pool *pgxpool.Pool, bound time.Duration) []whJob {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(bound); ; time.Sleep(25 * time.Millisecond) {
		jobs, err := whJobs(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		final := true
		for _, j := range jobs {
			if j.state != "completed" && j.state != "cancelled" && j.state != "discarded" {
				final = false
			}
		}
		if final {
			return jobs
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery jobs not final within %v: %+v", bound, jobs)
		}
	}
}

func jobFor(jobs []whJob, url string) []whJob {
	var out []whJob
	for _, j := range jobs {
		if j.url == url {
			out = append(out, j)
		}
	}
	return out
}

// whAnswer is what the create_media_buy handler of these tests answers:
// a submitted task whose outcome goes to the webhook.
type whAnswer struct {
	Status   string `json:"status"`
	TaskID   string `json:"task_id"`
	EventKey string `json:"-"` // for the test only: not part of the stored answer
}

var errBuyRefused = errors.New("the media buy was refused")

// whCreate is the handler: it writes the buy, builds its completion event
// and enqueues it, all in the request's transaction; fail makes it fail
// after all of that, so the transaction rolls back.
func whCreate(client *river.Client[pgx.Tx], key, url string, fail bool, opts *river.InsertOpts, eventKey *string) func(context.Context, pgx.Tx) (whAnswer, error) {
	return func(ctx context.Context, tx pgx.Tx) (whAnswer, error) {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO wh_buys (idem_key, budget) VALUES ($1, 5000) RETURNING id`, key).Scan(&id); err != nil {
			return whAnswer{}, err
		}
		task := fmt.Sprintf("task_%d", id)
		d, err := webhook.NewDelivery(webhook.PushNotificationConfig{URL: url, OperationID: "op_" + key}, webhook.Notification{
			TaskID: task, TaskType: "create_media_buy", Status: webhook.StatusCompleted,
			Result: map[string]string{"media_buy_id": fmt.Sprintf("mb_%d", id)},
		})
		if err != nil {
			return whAnswer{}, err
		}
		if _, err := riverdelivery.Enqueue(ctx, client, tx, d, opts); err != nil {
			return whAnswer{}, err
		}
		if eventKey != nil {
			*eventKey = d.IdempotencyKey
		}
		if fail {
			return whAnswer{}, errBuyRefused
		}
		return whAnswer{Status: "submitted", TaskID: task}, nil
	}
}

func whRequest(key string) idem.Request {
	return idem.Request{Principal: "alice", Key: key, Operation: "create_media_buy",
		Payload: json.RawMessage(`{"total_budget":{"amount":5000,"currency":"USD"},"push_notification_config":{"url":"https://buyer.example/h","operation_id":"op"}}`)}
}

func TestWebhookTransactionalEnqueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := riverSchema(t)
	sink := newWhSink(t)
	client := startRiver(t, pool, riverConfig(whSender()))
	store, err := idem.NewStore(&idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		t.Fatal(err)
	}

	// Rolled back: the handler enqueued, then failed.
	rolledKey := "wh-rolled-" + randomID(8)
	var rolledEvent string
	_, err = idem.RunInTx(ctx, store, pool, whRequest(rolledKey), whCreate(client, rolledKey, sink.URL("/rolled"), true, nil, &rolledEvent))
	if !errors.Is(err, errBuyRefused) || rolledEvent == "" {
		t.Fatalf("rolled-back request: %v (event %q)", err, rolledEvent)
	}
	// Committed.
	key := "wh-committed-" + randomID(8)
	var event string
	res, err := idem.RunInTx(ctx, store, pool, whRequest(key), whCreate(client, key, sink.URL("/committed"), false, nil, &event))
	if err != nil || res.Replayed {
		t.Fatalf("committed request: %+v %v", res, err)
	}
	// A replay of the committed request does not run the handler: no
	// second event.
	again, err := idem.RunInTx(ctx, store, pool, whRequest(key), whCreate(client, key, sink.URL("/committed"), false, nil, nil))
	if err != nil || !again.Replayed || again.Value.TaskID != res.Value.TaskID {
		t.Fatalf("replay: %+v %v", again, err)
	}

	jobs := waitJobsFinal(t, pool, 60*time.Second)
	if len(jobs) != 1 || jobs[0].url != sink.URL("/committed") || jobs[0].state != "completed" || jobs[0].key != event {
		t.Fatalf("jobs %+v, want one completed job for the committed request's event", jobs)
	}
	var buys int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM wh_buys`).Scan(&buys); err != nil || buys != 1 {
		t.Fatalf("%d buys (%v), want 1", buys, err)
	}
	if got := sink.got("/rolled"); len(got) != 0 {
		t.Errorf("%d deliveries for the rolled-back request", len(got))
	}
	got := sink.got("/committed")
	if len(got) != 1 {
		t.Fatalf("%d deliveries for the committed request, want 1", len(got))
	}
	h := got[0]
	if h.verifyErr != nil || h.key != event || !bytes.Equal(h.body, jobs[0].body) {
		t.Errorf("delivery: key %q (want %q), verify %v, body matches job: %v", h.key, event, h.verifyErr, bytes.Equal(h.body, jobs[0].body))
	}
	if event == key || event == res.Value.TaskID {
		t.Errorf("event key %q reuses the request key or the task id", event)
	}
	ev, err := webhook.ParseEvent(h.body)
	if err != nil || ev.TaskID != res.Value.TaskID || ev.OperationID != "op_"+key || ev.Status != webhook.StatusCompleted {
		t.Errorf("event %+v, %v", ev, err)
	}
}

func TestWebhookRetriesSameBody(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := riverSchema(t)
	sink := newWhSink(t)
	sink.set("/flaky", func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}, nil)
	client := startRiver(t, pool, riverConfig(whSender()))
	d, err := webhook.NewDelivery(webhook.PushNotificationConfig{URL: sink.URL("/flaky") + "?route=tok_SECRET", OperationID: "op_flaky"},
		webhook.Notification{TaskID: "task_1", TaskType: "create_media_buy", Status: webhook.StatusCompleted})
	if err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := riverdelivery.Enqueue(ctx, client, tx, d, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	jobs := waitJobsFinal(t, pool, 60*time.Second)
	if len(jobs) != 1 || jobs[0].state != "completed" || jobs[0].attempt != 3 || len(jobs[0].errors) != 2 {
		t.Fatalf("jobs %+v, want one job completed on attempt 3 after 2 errors", jobs)
	}
	for _, e := range jobs[0].errors {
		if !strings.Contains(e.Error, "503") || strings.Contains(e.Error, "tok_SECRET") || strings.Contains(e.Error, "127.0.0.1") {
			t.Errorf("recorded error %q: want the status, never the URL", e.Error)
		}
	}
	got := sink.got("/flaky")
	if len(got) != 3 {
		t.Fatalf("%d attempts, want 3", len(got))
	}
	nonces := map[string]bool{}
	for i, h := range got {
		if h.verifyErr != nil {
			t.Errorf("attempt %d: signature: %v", i+1, h.verifyErr)
		}
		if !bytes.Equal(h.body, d.Body) || h.key != d.IdempotencyKey {
			t.Errorf("attempt %d: body or key differs from the event's", i+1)
		}
		nonces[h.nonce] = true
	}
	if len(nonces) != 3 {
		t.Errorf("%d distinct nonces over 3 attempts", len(nonces))
	}
}

func TestWebhookGivesUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := riverSchema(t)
	sink := newWhSink(t)
	sink.set("/gone", func(int) int { return http.StatusNotFound }, nil)
	sink.set("/conflict", func(int) int { return http.StatusConflict }, nil)
	sink.set("/later", func(int) int { return http.StatusServiceUnavailable }, nil)
	client := startRiver(t, pool, riverConfig(whSender()))

	enqueue := func(path string, age time.Duration) {
		d, err := webhook.NewDelivery(webhook.PushNotificationConfig{URL: sink.URL(path), OperationID: "op"},
			webhook.Notification{TaskID: "task" + strings.ReplaceAll(path, "/", "_"), TaskType: "create_media_buy", Status: webhook.StatusFailed})
		if err != nil {
			t.Fatal(err)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			res, err := riverdelivery.Enqueue(ctx, client, tx, d, nil)
			if err != nil || age == 0 {
				return err
			}
			// A delivery whose first attempt is older than the horizon
			// (24 h by default): made so in the same transaction, before
			// any worker can see the job.
			_, err = tx.Exec(ctx, `UPDATE river_job SET created_at = now() - make_interval(secs => $2) WHERE id = $1`, res.Job.ID, age.Seconds())
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	enqueue("/gone", 0)
	enqueue("/conflict", 0)
	enqueue("/later", 25*time.Hour)

	jobs := waitJobsFinal(t, pool, 60*time.Second)
	for path, want := range map[string]struct {
		hits  int
		error string
	}{
		"/gone":     {1, "receiver answered 404 (permanent)"},
		"/conflict": {1, "receiver answered 409 (permanent)"},
		"/later":    {0, "retry horizon passed"},
	} {
		js := jobFor(jobs, sink.URL(path))
		if len(js) != 1 {
			t.Errorf("%s: %d jobs", path, len(js))
			continue
		}
		j := js[0]
		if j.state != "cancelled" || j.attempt != 1 || len(j.errors) != 1 || !strings.Contains(j.errors[0].Error, want.error) {
			t.Errorf("%s: job %s on attempt %d with errors %+v; want cancelled after one attempt, error %q", path, j.state, j.attempt, j.errors, want.error)
		}
		if len(j.errors) == 1 && strings.Contains(j.errors[0].Error, "127.0.0.1") {
			t.Errorf("%s: recorded error %q carries the URL", path, j.errors[0].Error)
		}
		if got := len(sink.got(path)); got != want.hits {
			t.Errorf("%s: %d POSTs, want %d", path, got, want.hits)
		}
	}
}

func TestWebhookTwoReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := riverSchema(t)
	cfg, err := pgxpool.ParseConfig(pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	pool2, err := pgxpool.NewWithConfig(ctx, cfg) // the second replica's own pool
	if err != nil {
		t.Fatal(err)
	}
	defer pool2.Close()
	sink := newWhSink(t)
	const events = 50
	for i := range events {
		if i%2 == 0 { // every other receiver fails the first attempt, so retries race too
			sink.set(fmt.Sprintf("/ev/%d", i), func(n int) int {
				if n == 1 {
					return http.StatusServiceUnavailable
				}
				return http.StatusOK
			}, nil)
		}
	}
	a := startRiver(t, pool, riverConfig(whSender()))
	b := startRiver(t, pool2, riverConfig(whSender()))
	keys := make([]string, events)
	for i := range events {
		d, err := webhook.NewDelivery(webhook.PushNotificationConfig{URL: sink.URL(fmt.Sprintf("/ev/%d", i)), OperationID: "op"},
			webhook.Notification{TaskID: fmt.Sprintf("task_%d", i), TaskType: "create_media_buy", Status: webhook.StatusCompleted})
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = d.IdempotencyKey
		client := a
		if i%2 == 1 {
			client = b
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := riverdelivery.Enqueue(ctx, client, tx, d, nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	jobs := waitJobsFinal(t, pool, 60*time.Second)
	byClient := map[string]int{}
	for _, j := range jobs {
		if j.state != "completed" {
			t.Errorf("job %d: %s", j.id, j.state)
		}
		for _, id := range j.by {
			byClient[id]++
		}
	}
	posts := 0
	for i := range events {
		got := sink.got(fmt.Sprintf("/ev/%d", i))
		posts += len(got)
		delivered := 0
		for _, h := range got {
			if h.status == http.StatusOK {
				delivered++
			}
			if h.key != keys[i] || h.verifyErr != nil {
				t.Errorf("event %d: key %q, signature %v", i, h.key, h.verifyErr)
			}
		}
		if delivered != 1 {
			t.Errorf("event %d delivered %d times, want exactly once", i, delivered)
		}
	}
	sink.mu.Lock()
	overlap := sink.overlap
	sink.mu.Unlock()
	if overlap != 0 || len(jobs) != events || posts != events+events/2 {
		t.Errorf("%d jobs, %d POSTs (want %d), %d overlapping attempts of one event", len(jobs), posts, events+events/2, overlap)
	}
	t.Logf("%d events, %d POSTs, attempts by client: %v", events, posts, byClient)
}

// The buyer's side live: the seller publishes its JWKS (JWKSHandler), the
// buyer fetches it and verifies deliveries with it, and dedupes them in
// Postgres. A proxy in front of the receiver loses the receiver's first
// answer for every event, so River delivers every event twice: the
// receiver processes it once and replays its stored answer to the retry.
func TestWebhookReceiverLive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := riverSchema(t)

	jwks := &httpsig.JWKSHandler{}
	if err := jwks.Publish(whSellerKeys(t)); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+httpsig.WellKnownJWKSPath, jwks)
	seller := httptest.NewServer(mux)
	defer seller.Close()
	resp, err := http.Get(seller.URL + httpsig.WellKnownJWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	keys, err := httpsig.ParseJWKS(raw)
	if err != nil {
		t.Fatalf("published JWKS: %v", err)
	}

	guard, err := idem.NewGuard(&idem.PostgresBackend{DB: pool}, &idem.Config{Duplicates: idem.RejectInFlight, TTL: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	processed := map[string]int{}
	receiver, err := webhook.NewReceiver(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in, _ := webhook.IncomingFromContext(r.Context())
		mu.Lock()
		processed[in.Event.IdempotencyKey]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ack":%q}`, in.Event.TaskID)
	}), &webhook.ReceiverConfig{Verifier: httpsig.NewVerifier(httpsig.ProfileWebhook, keys), Guard: guard})
	if err != nil {
		t.Fatal(err)
	}
	var pmu sync.Mutex
	seen := map[string]int{}
	answers := map[string][]string{}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		receiver.ServeHTTP(rec, r)
		pmu.Lock()
		seen[r.URL.Path]++
		n := seen[r.URL.Path]
		answers[r.URL.Path] = append(answers[r.URL.Path], fmt.Sprintf("%d %s", rec.Code, rec.Body.String()))
		pmu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusBadGateway) // the receiver's answer is lost
			return
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	defer proxy.Close()

	client := startRiver(t, pool, riverConfig(whSender()))
	const events = 10
	keysByPath := map[string]string{}
	for i := range events {
		path := fmt.Sprintf("/buyer/%d", i)
		d, err := webhook.NewDelivery(webhook.PushNotificationConfig{URL: proxy.URL + path, OperationID: "op"},
			webhook.Notification{TaskID: fmt.Sprintf("task_%d", i), TaskType: "create_media_buy", Status: webhook.StatusCompleted})
		if err != nil {
			t.Fatal(err)
		}
		keysByPath[path] = d.IdempotencyKey
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := riverdelivery.Enqueue(ctx, client, tx, d, nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	jobs := waitJobsFinal(t, pool, 60*time.Second)
	for _, j := range jobs {
		if j.state != "completed" || j.attempt != 2 {
			t.Errorf("job %d: %s after %d attempts, want completed on the second", j.id, j.state, j.attempt)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	pmu.Lock()
	defer pmu.Unlock()
	for path, key := range keysByPath {
		if processed[key] != 1 {
			t.Errorf("%s: processed %d times, want once", path, processed[key])
		}
		a := answers[path]
		if len(a) != 2 || a[0] != a[1] || !strings.HasPrefix(a[0], "200 ") {
			t.Errorf("%s: receiver answers %q, want the same 200 answer twice", path, a)
		}
	}
	// The receiver's claims are durable rows, scoped by the seller's keyid.
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE principal_id = 'seller-wh-1' AND response IS NOT NULL`).Scan(&rows); err != nil || rows != events {
		t.Errorf("%d stored receiver answers (%v), want %d", rows, err, events)
	}
}

// The crash matrix for webhooks (compare TestReliabilityCrashMatrix): a
// child process makes a media buy and enqueues its webhook under RunInTx,
// then works its delivery with a River client of its own, and is killed
// with SIGKILL at one of four points:
//
//	before_commit   the COMMIT of the request is about to be sent (the
//	                child holds there until killed)
//	after_commit    COMMIT returned; the child's River client is not started
//	mid_delivery    the receiver has the POST; the sender has no answer yet
//	                (the receiver kills the child before answering)
//	after_delivery  the POST was answered 2xx; River has not recorded the
//	                job completed (a River worker middleware pauses there)
//
// Each child works a queue of its own. When every kill is done, one fresh
// River client on all the queues (the only leader: children do not take
// part in leader election) rescues the jobs the dead children left running
// and delivers what is left. Then: every committed request has exactly one
// job, completed, and its event arrived at least once; every delivery of
// one event carries the same idempotency_key and the same body, with a
// valid signature; a request that did not commit has no job and no
// delivery.
const webhookChildEnv = "IDEM_WEBHOOK_CHILD"

func init() {
	// The child's main. TestMain is not involved: init runs first.
	if spec := os.Getenv(webhookChildEnv); spec != "" {
		runWebhookChild(spec)
	}
}

type whChildSpec struct {
	DB, Queue, URL, Key, Point string
	PauseMs                    int
}

var webhookPoints = []string{"before_commit", "after_commit", "mid_delivery", "after_delivery"}

// stageMiddleware prints "STAGE after_delivery" once a delivery job's work
// returned nil, before River records it completed, and pauses there.
type stageMiddleware struct {
	river.MiddlewareDefaults
	pause func(point string)
}

func (m *stageMiddleware) Work(ctx context.Context, _ *rivertype.JobRow, doInner func(context.Context) error) error {
	err := doInner(ctx)
	if err == nil {
		m.pause("after_delivery")
	}
	return err
}

func runWebhookChild(raw string) {
	var spec whChildSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "webhook child:", err)
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "webhook child:", err)
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	var armed, reachedTarget atomic.Bool
	pause := func(point string) {
		fmt.Printf("STAGE %s\n", point)
		if point != spec.Point || !reachedTarget.CompareAndSwap(false, true) {
			return
		}
		if point == "before_commit" {
			// Held until killed, so every such kill rolls back (a kill
			// that lands after COMMIT is after_commit's case).
			time.Sleep(time.Hour)
		}
		if spec.PauseMs > 0 {
			time.Sleep(time.Duration(rand.IntN(spec.PauseMs+1)) * time.Millisecond)
		}
	}
	hook := func(_ context.Context, _ *pgx.Conn, step string, start bool, _ []any, err error) {
		if !armed.Load() || step != stepCommit {
			return
		}
		switch {
		case start:
			pause("before_commit")
		case err == nil:
			pause("after_commit")
		}
	}
	ctx := context.Background()
	requests, err := tracedPool(ctx, spec.DB, 4, hook)
	if err != nil {
		fail(err)
	}
	riverPool, err := pgxpool.New(ctx, spec.DB)
	if err != nil {
		fail(err)
	}
	cfg := riverConfig(whSender(), spec.Queue)
	cfg.LeaderElectionDisabled = true
	cfg.Middleware = []rivertype.Middleware{&stageMiddleware{pause: pause}}
	client, err := river.NewClient(riverpgxv5.New(riverPool), cfg)
	if err != nil {
		fail(err)
	}
	store, err := idem.NewStore(&idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		fail(err)
	}
	armed.Store(true)
	res, err := idem.RunInTx(ctx, store, requests, whRequest(spec.Key),
		whCreate(client, spec.Key, spec.URL, false, &river.InsertOpts{Queue: spec.Queue}, nil))
	armed.Store(false)
	fmt.Printf("DONE task=%s err=%v\n", res.Value.TaskID, err)
	if err := client.Start(ctx); err != nil {
		fail(err)
	}
	time.Sleep(time.Hour) // the parent kills us before this ends
	os.Exit(3)
}

func TestReliabilityWebhookCrashMatrix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kills := knob("WEBHOOK_KILLS", 3, 20)
	pool := riverSchema(t)
	dsn := pool.Config().ConnString()
	sink := newWhSink(t)

	type job struct {
		point string
		i     int
		key   string
		queue string
	}
	var jobs []job
	for i := range kills {
		for _, p := range webhookPoints {
			jobs = append(jobs, job{p, i, fmt.Sprintf("whcrash-%s-%02d-%s", p, i, randomID(4)), "q_" + randomID(6)})
		}
	}
	var landed tally
	var mu sync.Mutex
	var lastKill time.Time
	start := time.Now()
	runJobs(t, 2, jobs, func(_ int, j job) error {
		path := "/crash/" + j.key
		app := "whchild-" + randomID(6) // names the child's sessions in pg_stat_activity
		raw, _ := json.Marshal(whChildSpec{DB: dsn + "&application_name=" + app, Queue: j.queue, URL: sink.URL(path),
			Key: j.key, Point: j.point, PauseMs: 2 * killJitterMs})
		started := make(chan *child, 1)
		killed := make(chan []string, 1)
		if j.point == "mid_delivery" {
			sink.set(path, nil, func() { killed <- (<-started).kill() })
		}
		c, err := startChild(selfCommand(webhookChildEnv, string(raw)))
		if err != nil {
			return err
		}
		started <- c
		if j.point == "mid_delivery" {
			select {
			case <-killed:
				landed.add("mid_delivery:at")
			case <-time.After(60 * time.Second):
				return fmt.Errorf("%s: no delivery within 60 s; the child printed %q", j.key, c.kill())
			}
		} else {
			if _, err := c.waitLine("STAGE "+j.point, 60*time.Second); err != nil {
				c.kill()
				return fmt.Errorf("%s: %w", j.key, err)
			}
			time.Sleep(jitter(killJitterMs))
			lines := c.kill()
			last := ""
			for _, l := range lines {
				if s, ok := strings.CutPrefix(l, "STAGE "); ok {
					last = s
				}
			}
			if last == j.point {
				landed.add(j.point + ":at")
			} else {
				landed.add(j.point + ":later")
			}
		}
		mu.Lock()
		lastKill = time.Now()
		mu.Unlock()
		return waitSessionsGone(ctx, pool, app)
	})
	if t.Failed() {
		return
	}

	// River's rescuer retries a running job once it has run longer than
	// RescueStuckJobsAfter and its own timeout (the Worker's: the Sender's
	// timeout plus 5 s): wait until the last dead child's job qualifies,
	// then start the survivor, which runs the rescuer as soon as it leads.
	const rescueAfter = 6500 * time.Millisecond
	time.Sleep(time.Until(lastKill.Add(rescueAfter + 500*time.Millisecond)))
	queues := make([]string, len(jobs))
	for i, j := range jobs {
		queues[i] = j.queue
	}
	cfg := riverConfig(whSender(), queues...)
	cfg.JobTimeout = 5 * time.Second
	cfg.RescueStuckJobsAfter = rescueAfter
	startRiver(t, pool, cfg)
	final := waitJobsFinal(t, pool, 90*time.Second)

	var committed, rolledBack, deliveries, resent int
	for _, j := range jobs {
		path := "/crash/" + j.key
		var buys int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM wh_buys WHERE idem_key = $1`, j.key).Scan(&buys); err != nil {
			t.Fatal(err)
		}
		js, hits := jobFor(final, sink.URL(path)), sink.got(path)
		deliveries += len(hits)
		if buys == 0 {
			rolledBack++
			if len(js) != 0 || len(hits) != 0 {
				t.Errorf("%s (%s): rolled back, yet %d jobs and %d deliveries", j.key, j.point, len(js), len(hits))
			}
			if j.point != "before_commit" {
				t.Errorf("%s: killed at %s, after the commit, but nothing committed", j.key, j.point)
			}
			continue
		}
		if j.point == "before_commit" {
			t.Errorf("%s: killed before its COMMIT was sent, yet committed", j.key)
		}
		committed++
		if buys != 1 || len(js) != 1 || js[0].state != "completed" {
			t.Errorf("%s (%s): %d buys, jobs %+v; want one buy and one completed job", j.key, j.point, buys, js)
			continue
		}
		ok := 0
		for _, h := range hits {
			if !bytes.Equal(h.body, js[0].body) || h.key != js[0].key || h.verifyErr != nil {
				t.Errorf("%s (%s): a delivery with key %q (want %q), same body %v, signature %v", j.key, j.point, h.key, js[0].key, bytes.Equal(h.body, js[0].body), h.verifyErr)
			}
			if h.status == http.StatusOK {
				ok++
			}
		}
		if ok == 0 {
			t.Errorf("%s (%s): committed but never delivered", j.key, j.point)
		}
		resent += len(hits) - 1
		if (j.point == "mid_delivery") && len(hits) < 2 {
			t.Errorf("%s: killed mid-delivery, yet not delivered again", j.key)
		}
	}
	figure(t, "webhook crash matrix", "%d points x %d kills = %d SIGKILLs in %v; %d requests committed, each with exactly one job and its event delivered (%d POSTs, %d of them a resend of the same event with the same idempotency_key and body); %d rolled back, 0 of them with a job or a delivery; kills landed: %s",
		len(webhookPoints), kills, len(jobs), time.Since(start).Round(time.Second), committed, deliveries, resent, rolledBack, landed.String())
}
