package idemotel_test

import (
	"encoding/json"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"

	"github.com/adcp-go/idempotency/idemotel"
)

// promSetup is a Prometheus registry fed by the OpenTelemetry exporter and
// served by promhttp, as a seller's /metrics is.
type promSetup struct {
	exporter *otelprom.Exporter
	server   *httptest.Server
}

func newPrometheus(t *testing.T) *promSetup {
	t.Helper()
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return &promSetup{exporter: exporter, server: srv}
}

// scrape GETs /metrics with the given Accept header ("" for none) and
// returns the exposition text.
func (p *promSetup) scrape(t *testing.T, accept string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.server.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := p.server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d, %v", resp.StatusCode, err)
	}
	return string(body)
}

// The mix, exported to Prometheus and scraped over HTTP: every series and
// count, under the names the Grafana dashboard uses, whether or not the
// scraper accepts UTF-8 names.
func TestPrometheusExposition(t *testing.T) {
	prom := newPrometheus(t)
	h := newHarness(t, prom.exporter)
	runMix(t, h.obs, h.tp)

	for _, accept := range []string{"", "text/plain;version=1.0.0;escaping=allow-utf-8"} {
		text := prom.scrape(t, accept)
		families, err := parse(text)
		if err != nil {
			t.Fatalf("parsing the exposition: %v\n%s", err, text)
		}
		checkExposition(t, families)
		if t.Failed() {
			t.Fatalf("with Accept %q:\n%s", accept, text)
		}
	}

	families, err := parse(prom.scrape(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	checkDashboard(t, "../docs/grafana/idempotency-dashboard.json", families)
}

// parse parses an exposition in the text format.
func parse(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(text))
}

// promLabels are a series' labels, less the exporter's otel_scope_* ones.
func promLabels(t *testing.T, m *dto.Metric) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case "otel_scope_name":
			if l.GetValue() != idemotel.ScopeName {
				t.Errorf("otel_scope_name %q", l.GetValue())
			}
		case "otel_scope_version", "otel_scope_schema_url":
		default:
			out[l.GetName()] = l.GetValue()
		}
	}
	return out
}

func (w want) promLabels() map[string]string {
	m := map[string]string{"idempotency_operation": w.op, "idempotency_outcome": w.outcome}
	if w.errorType != "" {
		m["error_type"] = w.errorType
	}
	return m
}

// family returns the named family after checking its type.
func family(t *testing.T, families map[string]*dto.MetricFamily, name string, typ dto.MetricType) *dto.MetricFamily {
	t.Helper()
	f, ok := families[name]
	if !ok {
		t.Fatalf("no %s in the exposition; it has %v", name, slices.Sorted(maps.Keys(families)))
	}
	if f.GetType() != typ {
		t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
	}
	return f
}

// checkCalls checks that f has exactly the series of ws, with their counts
// (histogram sample counts for a histogram).
func checkCalls(t *testing.T, f *dto.MetricFamily, ws []want) {
	t.Helper()
	if len(f.GetMetric()) != len(ws) {
		t.Errorf("%s: %d series, want %d", f.GetName(), len(f.GetMetric()), len(ws))
	}
	for _, w := range ws {
		found := false
		for _, m := range f.GetMetric() {
			if !maps.Equal(promLabels(t, m), w.promLabels()) {
				continue
			}
			found = true
			n := m.GetCounter().GetValue()
			if f.GetType() == dto.MetricType_HISTOGRAM {
				n = float64(m.GetHistogram().GetSampleCount())
				var bounds []float64
				for _, b := range m.GetHistogram().GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
				}
				if !slices.Equal(bounds, append(slices.Clone(durationBuckets), math.Inf(1))) {
					t.Errorf("%s%v: buckets %v", f.GetName(), w.promLabels(), bounds)
				}
			}
			if n != float64(w.calls) {
				t.Errorf("%s%v = %v, want %d", f.GetName(), w.promLabels(), n, w.calls)
			}
		}
		if !found {
			t.Errorf("%s%v: missing", f.GetName(), w.promLabels())
		}
	}
}

func checkExposition(t *testing.T, families map[string]*dto.MetricFamily) {
	t.Helper()
	checkCalls(t, family(t, families, "idempotency_calls_total", dto.MetricType_COUNTER), mixCalls)
	checkCalls(t, family(t, families, "idempotency_call_duration_seconds", dto.MetricType_HISTOGRAM), mixCalls)
	checkCalls(t, family(t, families, "idempotency_duplicate_wait_duration_seconds", dto.MetricType_HISTOGRAM), []want{mixWaited})

	active := family(t, families, "idempotency_active_calls", dto.MetricType_GAUGE)
	ops := map[string]float64{}
	for _, m := range active.GetMetric() {
		labels := promLabels(t, m)
		if len(labels) != 1 {
			t.Errorf("idempotency_active_calls labels %v", labels)
		}
		ops[labels["idempotency_operation"]] = m.GetGauge().GetValue()
	}
	if !maps.Equal(ops, map[string]float64{opCreate: 0, opUpdate: 0}) {
		t.Errorf("idempotency_active_calls %v, want 0 for both operations", ops)
	}

	swept := family(t, families, "idempotency_swept_entries_total", dto.MetricType_COUNTER)
	if m := swept.GetMetric(); len(m) != 1 || m[0].GetCounter().GetValue() != mixSwept || len(promLabels(t, m[0])) != 0 {
		t.Errorf("idempotency_swept_entries_total: %v, want %d", m, mixSwept)
	}
}

var (
	promMetricName = regexp.MustCompile(`\bidempotency_[a-z_]+\b`)
	promGrouping   = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	promMatcher    = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
)

// checkDashboard checks that the dashboard is valid JSON and that its
// queries use only metric and label names of the exposition.
func checkDashboard(t *testing.T, path string, families map[string]*dto.MetricFamily) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	labels := map[string]bool{"le": true}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for name := range promLabels(t, m) {
				labels[name] = true
			}
		}
	}
	var exprs []string
	for _, p := range dashboard.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
		}
	}
	for _, v := range dashboard.Templating.List {
		if q, ok := v.Query.(string); ok {
			exprs = append(exprs, q)
		}
	}
	used := map[string]bool{}
	for _, expr := range exprs {
		for _, name := range promMetricName.FindAllString(expr, -1) {
			if labels[name] {
				continue // idempotency_operation, idempotency_outcome
			}
			used[name] = true
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && families[b].GetType() == dto.MetricType_HISTOGRAM {
					base = b
				}
			}
			if families[base] == nil {
				t.Errorf("dashboard query %q: no metric %s in the exposition", expr, name)
			}
		}
		for _, m := range promGrouping.FindAllStringSubmatch(expr, -1) {
			for l := range strings.SplitSeq(m[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !labels[l] {
					t.Errorf("dashboard query %q: no label %s in the exposition", expr, l)
				}
			}
		}
		for _, m := range promMatcher.FindAllStringSubmatch(expr, -1) {
			if !labels[m[1]] {
				t.Errorf("dashboard query %q: no label %s in the exposition", expr, m[1])
			}
		}
	}
	for _, name := range []string{"idempotency_calls_total", "idempotency_call_duration_seconds_bucket",
		"idempotency_duplicate_wait_duration_seconds_bucket", "idempotency_active_calls", "idempotency_swept_entries_total"} {
		if !used[name] {
			t.Errorf("the dashboard does not chart %s", name)
		}
	}
}
