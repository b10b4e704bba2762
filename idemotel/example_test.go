package idemotel_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemotel"
	"github.com/adcp-go/idempotency/memstore"
)

// New without options records through the global MeterProvider and
// TracerProvider, which the application sets once at start-up
// (otel.SetMeterProvider, otel.SetTracerProvider); one Observer serves
// every Store and Guard.
func Example() {
	obs, err := idemotel.New()
	if err != nil {
		panic(err)
	}
	store := memstore.New(nil)
	defer store.Close()
	guard, err := idem.NewGuard(store, &idem.Config{Observer: obs})
	if err != nil {
		panic(err)
	}

	req := idem.Request{Principal: "agent-42", Key: "0b9f4c1e-6a7d-4e2b-9c3f-5d8a1e7b2c40",
		Operation: "create_media_buy", Payload: []byte(`{"budget":5000}`)}
	res, err := idem.Do(context.Background(), guard, req, func(ctx context.Context) (string, error) {
		// ctx carries the call's span: spans started from it are its children.
		return "mb_1", nil
	})
	fmt.Println(res.Value, err)
	// Output: mb_1 <nil>
}

// Metrics for a Prometheus /metrics endpoint: the OpenTelemetry Prometheus
// exporter registers in a registry that promhttp serves. Name the
// translation strategy: it fixes the names the dashboards use.
func Example_prometheus() {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(registry),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		panic(err)
	}
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer meters.Shutdown(context.Background())
	obs, err := idemotel.New(idemotel.WithMeterProvider(meters))
	if err != nil {
		panic(err)
	}
	store := memstore.New(nil)
	defer store.Close()
	guard, err := idem.NewGuard(store, &idem.Config{Observer: obs})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))

	req := idem.Request{Principal: "agent-42", Key: "0b9f4c1e-6a7d-4e2b-9c3f-5d8a1e7b2c40",
		Operation: "create_media_buy", Payload: []byte(`{"budget":5000}`)}
	for range 2 {
		_, _ = idem.Do(context.Background(), guard, req, func(ctx context.Context) (string, error) { return "mb_1", nil })
	}

	scrape := httptest.NewRecorder()
	mux.ServeHTTP(scrape, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	lines := bufio.NewScanner(scrape.Body)
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "idempotency_calls_total") {
			fmt.Println(lines.Text())
		}
	}
	// Output:
	// idempotency_calls_total{idempotency_operation="create_media_buy",idempotency_outcome="executed",otel_scope_name="github.com/adcp-go/idempotency/idemotel",otel_scope_schema_url="",otel_scope_version=""} 1
	// idempotency_calls_total{idempotency_operation="create_media_buy",idempotency_outcome="replayed",otel_scope_name="github.com/adcp-go/idempotency/idemotel",otel_scope_schema_url="",otel_scope_version=""} 1
}
