package idemotel_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemotel"
	"github.com/adcp-go/idempotency/memstore"
)

// durationBuckets are the bucket bounds both histograms must have: 1 ms to
// 30 s.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// harness is an Observer on SDK providers whose output the test reads.
type harness struct {
	obs    *idemotel.Observer
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
}

func newHarness(t *testing.T, readers ...sdkmetric.Reader) *harness {
	t.Helper()
	h := &harness{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	opts := []sdkmetric.Option{sdkmetric.WithReader(h.reader)}
	for _, r := range readers {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = h.tp.Shutdown(context.Background())
	})
	obs, err := idemotel.New(idemotel.WithMeterProvider(mp), idemotel.WithTracerProvider(h.tp))
	if err != nil {
		t.Fatal(err)
	}
	h.obs = obs
	return h
}

func (h *harness) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]metricdata.Metrics)
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != idemotel.ScopeName {
			t.Errorf("instrumentation scope %q, want %q", sm.Scope.Name, idemotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// attrs is the attribute set of a call series.
func (w want) attrs() attribute.Set {
	kv := []attribute.KeyValue{attribute.String("idempotency.operation", w.op), attribute.String("idempotency.outcome", w.outcome)}
	if w.errorType != "" {
		kv = append(kv, attribute.String("error.type", w.errorType))
	}
	return attribute.NewSet(kv...)
}

// checkSeries checks that m has exactly the series of ws (by attribute set),
// each with its count.
func checkSeries(t *testing.T, m metricdata.Metrics, ws []want) {
	t.Helper()
	got := map[attribute.Distinct]int{}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		if !d.IsMonotonic || d.Temporality != metricdata.CumulativeTemporality {
			t.Errorf("%s: not a cumulative counter", m.Name)
		}
		for _, p := range d.DataPoints {
			got[p.Attributes.Equivalent()] = int(p.Value)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			got[p.Attributes.Equivalent()] = int(p.Count)
			if !slices.Equal(p.Bounds, durationBuckets) {
				t.Errorf("%s: bucket bounds %v", m.Name, p.Bounds)
			}
		}
	default:
		t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
	}
	if len(got) != len(ws) {
		t.Errorf("%s: %d series, want %d: %v", m.Name, len(got), len(ws), got)
	}
	for _, w := range ws {
		set := w.attrs()
		if n, ok := got[set.Equivalent()]; !ok || n != w.calls {
			t.Errorf("%s{%s}: %d (present: %v), want %d", m.Name, set.Encoded(attribute.DefaultEncoder()), n, ok, w.calls)
		}
	}
}

// Every outcome of the mix is counted under the right attributes, in the
// counter and the duration histogram; only the waiting duplicate is in the
// wait histogram; no call is left active; the sweep is counted; every call
// has its span, with the handler's span as its child.
func TestObserverRecordsTheMix(t *testing.T) {
	h := newHarness(t)
	runMix(t, h.obs, h.tp)
	ms := h.collect(t)

	if len(ms) != 5 {
		t.Errorf("%d metrics, want 5: %v", len(ms), slices.Sorted(func(yield func(string) bool) {
			for name := range ms {
				yield(name)
			}
		}))
	}
	checkSeries(t, ms["idempotency.calls"], mixCalls)
	checkSeries(t, ms["idempotency.call.duration"], mixCalls)
	checkSeries(t, ms["idempotency.duplicate.wait.duration"], []want{mixWaited})
	if wait := ms["idempotency.duplicate.wait.duration"].Data.(metricdata.Histogram[float64]).DataPoints[0]; wait.Sum <= 0 {
		t.Errorf("the waiting duplicate waited %vs", wait.Sum)
	}
	for name, unit := range map[string]string{
		"idempotency.calls": "{call}", "idempotency.call.duration": "s", "idempotency.duplicate.wait.duration": "s",
		"idempotency.active_calls": "{call}", "idempotency.swept_entries": "{entry}",
	} {
		if ms[name].Unit != unit || ms[name].Description == "" {
			t.Errorf("%s: unit %q, description %q", name, ms[name].Unit, ms[name].Description)
		}
	}

	active, ok := ms["idempotency.active_calls"].Data.(metricdata.Sum[int64])
	if !ok || active.IsMonotonic || len(active.DataPoints) != 2 {
		t.Fatalf("idempotency.active_calls: %+v", ms["idempotency.active_calls"].Data)
	}
	for _, p := range active.DataPoints {
		op, _ := p.Attributes.Value("idempotency.operation")
		if p.Attributes.Len() != 1 || p.Value != 0 {
			t.Errorf("idempotency.active_calls{%v} = %d, want 0 with the operation only", op.AsString(), p.Value)
		}
	}
	swept, ok := ms["idempotency.swept_entries"].Data.(metricdata.Sum[int64])
	if !ok || len(swept.DataPoints) != 1 || swept.DataPoints[0].Value != mixSwept || swept.DataPoints[0].Attributes.Len() != 0 {
		t.Errorf("idempotency.swept_entries: %+v, want %d without attributes", ms["idempotency.swept_entries"].Data, mixSwept)
	}

	checkMixSpans(t, h.spans.Ended())
}

func checkMixSpans(t *testing.T, spans []sdktrace.ReadOnlySpan) {
	t.Helper()
	calls := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	var handler sdktrace.ReadOnlySpan
	outcomes := map[attribute.Distinct]int{}
	for _, s := range spans {
		if s.Name() == handlerSpan {
			handler = s
			continue
		}
		calls[s.SpanContext().SpanID()] = s
		attrs := attribute.NewSet(s.Attributes()...)
		outcomes[attrs.Equivalent()]++
		op, _ := attrs.Value("idempotency.operation")
		errorType, failed := attrs.Value("error.type")
		switch {
		case s.Name() != "idempotency "+op.AsString():
			t.Errorf("span %q for operation %q", s.Name(), op.AsString())
		case s.SpanKind() != trace.SpanKindInternal:
			t.Errorf("span %q of kind %v", s.Name(), s.SpanKind())
		case s.InstrumentationScope().Name != idemotel.ScopeName:
			t.Errorf("span scope %q", s.InstrumentationScope().Name)
		case failed && s.Status() != sdktrace.Status{Code: codes.Error, Description: errorType.AsString()}:
			t.Errorf("failed span %v has status %+v", attrs.Encoded(attribute.DefaultEncoder()), s.Status())
		case !failed && s.Status().Code != codes.Unset:
			t.Errorf("span %v has status %+v, want unset", attrs.Encoded(attribute.DefaultEncoder()), s.Status())
		case len(s.Events()) != 0 || len(s.Links()) != 0:
			t.Errorf("span %q has events or links", s.Name())
		}
	}
	for _, w := range mixCalls {
		set := w.attrs()
		if outcomes[set.Equivalent()] != w.calls {
			t.Errorf("%d spans with %s, want %d", outcomes[set.Equivalent()], set.Encoded(attribute.DefaultEncoder()), w.calls)
		}
	}
	if len(calls) != 13 {
		t.Errorf("%d call spans, want 13", len(calls))
	}
	if handler == nil {
		t.Fatal("no handler span")
	}
	parent, ok := calls[handler.Parent().SpanID()]
	if !ok || parent.Name() != "idempotency "+opCreate || parent.SpanContext().TraceID() != handler.SpanContext().TraceID() {
		t.Fatalf("the handler's span is not a child of its call's span (parent %v)", handler.Parent())
	}
	parentAttrs := attribute.NewSet(parent.Attributes()...)
	if outcome, _ := parentAttrs.Value("idempotency.outcome"); outcome.AsString() != "executed" {
		t.Errorf("the handler's call ended %q", outcome.AsString())
	}
}

// A span that encloses the call is the parent of the call's span.
func TestCallSpanIsChildOfCallerSpan(t *testing.T) {
	h := newHarness(t)
	store := memstore.New(nil)
	defer store.Close()
	g, err := idem.NewGuard(store, &idem.Config{Observer: h.obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, request := h.tp.Tracer("server").Start(context.Background(), "tools/call")
	_, err = idem.Do(ctx, g, idem.Request{Principal: "p", Key: "span-parent-key-0001", Operation: opCreate, Payload: []byte(`{}`)},
		func(context.Context) (int, error) { return 1, nil })
	request.End()
	if err != nil {
		t.Fatal(err)
	}
	spans := h.spans.Ended()
	if len(spans) != 2 || spans[0].Name() != "idempotency "+opCreate || spans[0].Parent().SpanID() != request.SpanContext().SpanID() {
		t.Fatalf("the call's span is not the child of the request's: %v", spans)
	}
}

// Outcomes added to package idem later are counted as errors of type
// _OTHER, never as a new attribute value; an End without a Begin records
// the call but leaves the active count and the spans alone.
func TestUnknownOutcomeAndEndWithoutBegin(t *testing.T) {
	h := newHarness(t)
	ctx := h.obs.Begin(context.Background(), opCreate)
	h.obs.End(ctx, idem.Observation{Operation: opCreate, Outcome: "brand_new_outcome", Duration: time.Millisecond})
	h.obs.End(context.Background(), idem.Observation{Operation: opCreate, Outcome: idem.OutcomeExecuted, Duration: time.Millisecond})
	h.obs.Swept(context.Background(), 7)

	ms := h.collect(t)
	ws := []want{{opCreate, "error", "_OTHER", 1}, {opCreate, "executed", "", 1}}
	checkSeries(t, ms["idempotency.calls"], ws)
	checkSeries(t, ms["idempotency.call.duration"], ws)
	if _, ok := ms["idempotency.duplicate.wait.duration"]; ok {
		t.Error("calls that never waited recorded a wait")
	}
	if p := ms["idempotency.active_calls"].Data.(metricdata.Sum[int64]).DataPoints; len(p) != 1 || p[0].Value != 0 {
		t.Errorf("idempotency.active_calls: %+v", p)
	}
	if p := ms["idempotency.swept_entries"].Data.(metricdata.Sum[int64]).DataPoints; len(p) != 1 || p[0].Value != 7 {
		t.Errorf("idempotency.swept_entries: %+v", p)
	}
	spans := h.spans.Ended()
	if len(spans) != 1 || spans[0].Status() != (sdktrace.Status{Code: codes.Error, Description: "_OTHER"}) {
		t.Fatalf("spans: %v", spans)
	}
}

// The observer never records a key, a principal, a payload or a handler's
// error: calls whose key, principal, payload and error carry a marker, in
// every outcome, leave no trace of it in any metric (names, descriptions,
// attribute keys and values, exemplars), any span (names, attributes,
// events, links, status), or the Prometheus exposition.
func TestNoKeyPrincipalOrPayloadIsRecorded(t *testing.T) {
	const marker = "zqxmarker"
	prom := newPrometheus(t)
	h := newHarness(t, prom.exporter)
	store := memstore.New(nil)
	defer store.Close()
	g, err := idem.NewGuard(store, &idem.Config{Observer: h.obs, Duplicates: idem.RejectInFlight})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	principal := "ZQXMARKER-principal-agent@example.com"
	key := "ZQXMARKER-key-0000000000001"
	payload := `{"note":"ZQXMARKER-payload","budget":5}`
	seen := ""
	do := func(ctx context.Context, key, payload string, fn func(context.Context) (string, error)) error {
		_, err := idem.Do(ctx, g, idem.Request{Principal: principal, Key: key, Operation: opCreate, Payload: []byte(payload)}, fn)
		return err
	}
	ok := func(ctx context.Context) (string, error) { seen = "ZQXMARKER-answer"; return seen, nil }
	fail := func(context.Context) (string, error) { return "", errors.New("ZQXMARKER-error") }

	_ = do(ctx, key, payload, ok)                                        // executed
	_ = do(ctx, key, payload, ok)                                        // replayed
	_ = do(ctx, key, `{"note":"ZQXMARKER-payload-2","budget":6}`, ok)    // conflict
	_ = do(ctx, "ZQXMARKER key with spaces", payload, ok)                // invalid
	_ = do(ctx, "ZQXMARKER-key-0000000000002", payload, fail)            // handler_error
	_ = do(ctx, "ZQXMARKER-key-0000000000003", `{"note":"ZQXMARKER`, ok) // invalid payload
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_ = do(cctx, "ZQXMARKER-key-0000000000004", payload, ok) // canceled
	running, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = do(ctx, "ZQXMARKER-key-0000000000005", payload, func(context.Context) (string, error) {
			close(running)
			<-release
			return "", nil
		})
	}()
	<-running
	_ = do(ctx, "ZQXMARKER-key-0000000000005", payload, ok) // in_flight
	close(release)
	<-done
	if seen == "" {
		t.Fatal("the handler never ran")
	}

	var texts []string
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		texts = append(texts, sm.Scope.Name, sm.Scope.Version, sm.Scope.SchemaURL)
		texts = appendSet(texts, sm.Scope.Attributes)
		for _, m := range sm.Metrics {
			texts = append(texts, m.Name, m.Description, m.Unit)
			texts = appendData(t, texts, m.Data)
		}
	}
	for _, s := range h.spans.Ended() {
		texts = append(texts, s.Name(), s.Status().Description)
		texts = appendKVs(texts, s.Attributes())
		for _, e := range s.Events() {
			texts = append(texts, e.Name)
			texts = appendKVs(texts, e.Attributes)
		}
		for _, l := range s.Links() {
			texts = appendKVs(texts, l.Attributes)
		}
	}
	texts = append(texts, prom.scrape(t, ""))

	all := strings.Join(texts, "\n")
	for _, want := range []string{"idempotency.calls", "idempotency.outcome", "in_flight", "handler_error", "canceled", opCreate, "idempotency_calls_total"} {
		if !strings.Contains(all, want) {
			t.Fatalf("the collected telemetry lacks %q: the walk is incomplete", want)
		}
	}
	if i := strings.Index(strings.ToLower(all), marker); i >= 0 {
		t.Fatalf("a key, principal, payload or error reached the telemetry: …%s…", all[max(0, i-80):min(len(all), i+80)])
	}
}

func appendKVs(texts []string, kvs []attribute.KeyValue) []string {
	for _, kv := range kvs {
		texts = append(texts, string(kv.Key), kv.Value.String())
	}
	return texts
}

func appendSet(texts []string, s attribute.Set) []string {
	return appendKVs(texts, s.ToSlice())
}

func appendPoints[N int64 | float64](texts []string, attrs attribute.Set, exemplars []metricdata.Exemplar[N]) []string {
	texts = appendSet(texts, attrs)
	for _, e := range exemplars {
		texts = appendKVs(texts, e.FilteredAttributes)
	}
	return texts
}

func appendData(t *testing.T, texts []string, data metricdata.Aggregation) []string {
	switch d := data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			texts = appendPoints(texts, p.Attributes, p.Exemplars)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			texts = appendPoints(texts, p.Attributes, p.Exemplars)
		}
	default:
		t.Fatalf("unexpected metric data %T: extend the walk", data)
	}
	return append(texts, fmt.Sprintf("%+v", data))
}
