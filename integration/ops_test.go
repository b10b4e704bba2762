package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
)

// opsSeller starts the seller command with env added to this process's
// environment and returns it with its base URL and its metrics URL (the
// main listener's /metrics without -metrics-addr).
func opsSeller(t *testing.T, env []string, args ...string) (c *child, base, metrics string) {
	t.Helper()
	bin, err := buildSeller()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "ADCP_SELLER_ENCRYPTION_KEYS=test="+base64.StdEncoding.EncodeToString(sellerKey))
	cmd.Env = append(cmd.Env, env...)
	if c, err = startChild(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.kill() })
	line, err := c.waitLine("adcp-seller: serving MCP at", time.Minute)
	m := servingLine.FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("seller printed %q (%v)", line, err)
	}
	base = strings.TrimSuffix(m[1], "/mcp")
	metrics = base + "/metrics"
	if slices.Contains(args, "-metrics-addr") {
		line, err := c.waitLine("adcp-seller: serving metrics at", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		metrics = strings.TrimPrefix(line, "adcp-seller: serving metrics at ")
	}
	return c, base, metrics
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// scrapeMetrics parses the exposition at url.
func scrapeMetrics(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	status, text := httpGet(t, url)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d", url, status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, text)
	}
	return families, text
}

// seriesValues returns the families' series as label set (less the
// otel_scope_* labels, "k=v,k=v" sorted) to value: the counter or gauge
// value, or a histogram's sample count.
func seriesValues(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			if !strings.HasPrefix(l.GetName(), "otel_scope_") {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
		}
		slices.Sort(labels)
		v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		if h := m.GetHistogram(); h != nil {
			v = float64(h.GetSampleCount())
		}
		out[strings.Join(labels, ",")] = v
	}
	return out
}

// The seller command on Postgres, a scripted mix of outcomes over MCP, and
// /metrics scraped from the -metrics-addr listener: every idempotency
// count exactly, the access log agreeing with it, pgx's and the runtime's
// metrics present, and no token, key, principal or payload in either.
func TestSellerMetricsScrape(t *testing.T) {
	t.Parallel()
	pool := newSchema(t)
	tokens := map[string]string{}
	var spec []string
	for _, p := range []string{"a", "b", "c", "d"} {
		tokens[p] = "sk_metrics_" + p + "_" + randomID(8)
		spec = append(spec, "metrics-principal-"+p+"="+tokens[p])
	}
	// -insert-rate 0.001 gives each principal a burst of one new key and no
	// second one within the test: the second new key is RATE_LIMITED.
	proc, base, metricsURL := opsSeller(t, nil, "-database-url", pool.Config().ConnString(), "-tokens", strings.Join(spec, ","),
		"-dev", "-insert-rate", "0.001", "-metrics-addr", "127.0.0.1:0")

	if status, body := httpGet(t, base+"/readyz"); status != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz: %d %q", status, body)
	}
	if status, _ := httpGet(t, base+"/metrics"); status != http.StatusNotFound {
		t.Errorf("/metrics on the main listener with -metrics-addr: %d, want 404", status)
	}
	families, _ := scrapeMetrics(t, metricsURL)
	if f := families["idempotency_calls_total"]; f != nil {
		t.Fatalf("calls counted before any call: %v", f)
	}

	session := map[string]func(args map[string]any) sellertest.Answer{}
	for p, tok := range tokens {
		cs := sellertest.Connect(t, base+"/mcp", tok)
		session[p] = func(args map[string]any) sellertest.Answer { return sellertest.Call(t, cs, "create_media_buy", args) }
	}
	key := func(n int) string { return fmt.Sprintf("metrics-%d-%s", n, randomID(6)) }
	k1, k2, k3, k4, k5 := key(1), key(2), key(3), key(4), key(5)
	errCode := func(a sellertest.Answer) string {
		if !a.IsError {
			return ""
		}
		code, _ := a.ErrorObject(t)["code"].(string)
		return code
	}
	expect := func(step string, a sellertest.Answer, wantCode string, wantReplayed bool) {
		t.Helper()
		if got := errCode(a); got != wantCode || (!a.IsError && a.Body["replayed"] != wantReplayed) {
			t.Fatalf("%s: %s, want code %q replayed %v", step, a.Raw, wantCode, wantReplayed)
		}
	}
	big := sellertest.CreateArgs(key(7), 100, "", "big")
	big["notes"] = strings.Repeat("x", 1<<20) // over the 1 MiB payload limit, under the HTTP body limit
	empty := sellertest.CreateArgs(k5, 100, "", "empty")
	empty["packages"] = []any{}

	expect("a executes k1", session["a"](sellertest.CreateArgs(k1, 100, "", "m1")), "", false)
	expect("a replays k1", session["a"](sellertest.CreateArgs(k1, 100, "", "m2")), "", true)
	expect("a replays k1 again", session["a"](sellertest.CreateArgs(k1, 100, "", "m3")), "", true)
	expect("a reuses k1 for another budget", session["a"](sellertest.CreateArgs(k1, 999, "", "m4")), "IDEMPOTENCY_CONFLICT", false)
	expect("a's second new key", session["a"](sellertest.CreateArgs(k2, 100, "", "m5")), "RATE_LIMITED", false)
	expect("a's oversized request", session["a"](big), "INVALID_REQUEST", false)
	expect("b executes k3", session["b"](sellertest.CreateArgs(k3, 100, "", "m6")), "", false)
	expect("b replays k3", session["b"](sellertest.CreateArgs(k3, 100, "", "m7")), "", true)
	expect("d's handler refuses empty packages", session["d"](empty), "INVALID_REQUEST", false)

	// In flight: another transaction holds the table, so c's claim waits
	// for it up to WaitLimit (5 s) and answers IDEMPOTENCY_IN_FLIGHT.
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "LOCK TABLE idempotency_keys IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	expect("c while the table is held", session["c"](sellertest.CreateArgs(k4, 100, "", "m8")), "IDEMPOTENCY_IN_FLIGHT", false)
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}

	families, text := scrapeMetrics(t, metricsURL)
	const op = "idempotency_operation=create_media_buy"
	wantCalls := map[string]float64{
		op + ",idempotency_outcome=executed":                            2,
		op + ",idempotency_outcome=replayed":                            3,
		op + ",idempotency_outcome=conflict":                            1,
		op + ",idempotency_outcome=rate_limited":                        1,
		op + ",idempotency_outcome=invalid":                             1,
		op + ",idempotency_outcome=in_flight":                           1,
		"error_type=handler_error," + op + ",idempotency_outcome=error": 1,
	}
	for _, name := range []string{"idempotency_calls_total", "idempotency_call_duration_seconds"} {
		if got := seriesValues(families[name]); !maps.Equal(got, wantCalls) {
			t.Errorf("%s:\n got %v\nwant %v", name, got, wantCalls)
		}
	}
	// No duplicate waited in this process (the in-flight call waited in
	// Postgres, which Observation.Waited does not count), and no sweep ran.
	for _, name := range []string{"idempotency_duplicate_wait_duration_seconds", "idempotency_swept_entries_total"} {
		if got := seriesValues(families[name]); len(got) != 0 {
			t.Errorf("%s: %v, want no series", name, got)
		}
	}
	if got := seriesValues(families["idempotency_active_calls"]); !maps.Equal(got, map[string]float64{op: 0}) {
		t.Errorf("idempotency_active_calls: %v", got)
	}
	// pgx through otelpgx, the pool, the Go runtime and the process.
	for _, name := range []string{"db_client_operation_duration_seconds", "pgxpool_acquired_connections", "pgxpool_max_connections",
		"go_goroutines", "process_resident_memory_bytes"} {
		if len(seriesValues(families[name])) == 0 {
			t.Errorf("no %s in the exposition", name)
		}
	}
	for _, secret := range []string{tokens["a"], k1, "metrics-principal-a", "xxxxxxxx"} {
		if strings.Contains(text, secret) {
			t.Errorf("the exposition contains %q", secret)
		}
	}

	// The access log agrees, line for line.
	stopSeller(t, proc)
	logs := proc.stderr.String()
	outcomes := map[string]float64{}
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"tool":"create_media_buy"`) {
			m := regexp.MustCompile(`"idempotency":"([a-z_]+)"`).FindStringSubmatch(line)
			if m == nil {
				t.Errorf("access log line without the outcome: %s", line)
				continue
			}
			outcomes[m[1]]++
		}
	}
	want := map[string]float64{"executed": 2, "replayed": 3, "conflict": 1, "rate_limited": 1, "invalid": 1, "in_flight": 1, "handler_error": 1}
	if !maps.Equal(outcomes, want) {
		t.Errorf("access log outcomes %v, want %v", outcomes, want)
	}
	for _, secret := range []string{tokens["a"], tokens["b"], k1, k3, "xxxxxxxx", `"m1"`} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}

// stopSeller sends SIGTERM and waits for a clean exit.
func stopSeller(t *testing.T, c *child) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the seller exited with %v; stderr:\n%s", err, c.stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("the seller did not exit within a minute of SIGTERM; stderr:\n%s", c.stderr.String())
	}
}

// The seller command in Postgres mode chosen by DATABASE_URL: start-up
// lines that say so (host and database, no password), /healthz, /readyz
// and /metrics on the main listener, and a graceful SIGTERM: a request in
// flight finishes and is answered while the listener already refuses new
// connections, then the process exits 0 after stopping its background
// work.
func TestSellerProcessLifecycle(t *testing.T) {
	t.Parallel()
	pool := newSchema(t)
	dsn := pool.Config().ConnString()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	tok := "sk_lifecycle_" + randomID(8)
	proc, base, metricsURL := opsSeller(t, []string{"DATABASE_URL=" + dsn}, "-tokens", "life="+tok, "-dev")

	if status, body := httpGet(t, base+"/healthz"); status != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", status, body)
	}
	if status, body := httpGet(t, base+"/readyz"); status != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz: %d %q", status, body)
	}
	families, _ := scrapeMetrics(t, metricsURL)
	for _, name := range []string{"go_goroutines", "pgxpool_max_connections"} {
		if len(seriesValues(families[name])) == 0 {
			t.Errorf("no %s on the main listener's /metrics", name)
		}
	}

	// A create held inside its handler: the seller's media buy table is
	// locked, so its INSERT waits (no lock_timeout outside the claim).
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(t.Context(), "LOCK TABLE seller_media_buys IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	cs := sellertest.Connect(t, base+"/mcp", tok)
	answer := make(chan sellertest.Answer, 1)
	go func() {
		a, err := sellertest.TryCall(cs, "create_media_buy", sellertest.CreateArgs("lifecycle-"+randomID(8), 100, "", "life"))
		if err != nil {
			a = sellertest.Answer{IsError: true, Raw: err.Error()}
		}
		answer <- a
	}()
	waitFor(t, func() bool {
		f, _ := scrapeMetrics(t, metricsURL)
		return seriesValues(f["idempotency_active_calls"])["idempotency_operation=create_media_buy"] == 1
	})

	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { // the listener closes; the request is still held
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	select {
	case a := <-answer:
		t.Fatalf("the request ended before the table was released: %s", a.Raw)
	default:
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if a := <-answer; a.IsError {
		t.Fatalf("the request in flight at SIGTERM: %s", a.Raw)
	}
	if err := proc.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v; stderr:\n%s", err, proc.stderr.String())
	}

	logs := proc.stderr.String()
	order := []string{
		`"msg":"storage: Postgres; state is kept in the database"`,
		`"msg":"storage: Postgres mode was chosen by DATABASE_URL in the environment; give -database-url= to run in memory"`,
		`"msg":"listening; ready once the seller has started (see /readyz)"`,
		`"msg":"ready: serving MCP and A2A"`,
		`"msg":"shutting down: no new connections; finishing requests in flight"`,
		`"tool":"create_media_buy","idempotency":"executed"`,
		`"msg":"HTTP servers stopped"`,
		`"msg":"background work stopped"`,
		`"msg":"stopped"`,
	}
	at := 0
	for _, s := range order {
		i := strings.Index(logs[at:], s)
		if i < 0 {
			t.Fatalf("the log lacks %s after offset %d:\n%s", s, at, logs)
		}
		at += i + len(s)
	}
	for _, want := range []string{`"host":"` + cfg.Host + `"`, `"database":"` + cfg.Database + `"`, `"from":"DATABASE_URL"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the storage line lacks %s:\n%s", want, logs)
		}
	}
	if cfg.Password == "" {
		t.Fatal("the test database URL has no password to look for")
	}
	// The password itself may be a common word ("idem"): look for it where
	// a URL or a field would carry it.
	output := logs + strings.Join(proc.seen, "\n")
	for _, secret := range []string{dsn, ":" + cfg.Password + "@", "password", tok} {
		if strings.Contains(output, secret) {
			t.Errorf("the output contains %q", secret)
		}
	}
}

// Readiness follows the database: with the seller's only pool connection
// held elsewhere, /readyz answers 503 and says why, without the URL; once
// it is free again, 200.
func TestSellerReadinessFollowsDatabase(t *testing.T) {
	t.Parallel()
	schemaPool := newSchema(t)
	cfg, err := pgxpool.ParseConfig(schemaPool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newSeller(t, pool)
	url := sellertest.Start(t, s)
	base := strings.TrimSuffix(url, "/mcp")
	if status, body := httpGet(t, base+"/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz: %d %q", status, body)
	}
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	status, body := httpGet(t, base+"/readyz")
	conn.Release()
	if status != http.StatusServiceUnavailable || body != "not ready: database: no answer within 2s\n" {
		t.Errorf("/readyz with the pool exhausted: %d %q", status, body)
	}
	if status, body := httpGet(t, base+"/readyz"); status != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz after: %d %q", status, body)
	}
}
