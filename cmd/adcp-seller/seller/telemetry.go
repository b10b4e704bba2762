package seller

import (
	"context"
	"errors"
	"net/http"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/adcp-go/idempotency/idemotel"
)

// Telemetry is the seller's metrics, for a Prometheus /metrics endpoint:
// the library's (package idemotel, from idem.Config.Observer), pgx's and
// its pool's in Postgres mode (github.com/exaring/otelpgx), and the Go
// runtime's and the process's. The OpenTelemetry metrics reach Prometheus
// through the OpenTelemetry Prometheus exporter, with names escaped by
// otlptranslator.UnderscoreEscapingWithSuffixes (idempotency_calls_total,
// idempotency_call_duration_seconds, ...: the names of docs/grafana and
// docs/OPERATIONS.md).
//
// Spans (one per idempotent call, one per SQL statement) go to the global
// OpenTelemetry TracerProvider, which does nothing unless the program
// installs one (otel.SetTracerProvider).
//
// Set it as Config.Telemetry, call InstrumentPool on the pool's
// configuration before creating the pool, serve Handler, and call Shutdown
// after the seller's Close.
type Telemetry struct {
	registry *prometheus.Registry
	meters   *sdkmetric.MeterProvider
	observer *idemotel.Observer
}

// NewTelemetry returns the seller's metrics, in a Prometheus registry of
// their own.
func NewTelemetry() (*Telemetry, error) {
	registry := prometheus.NewRegistry()
	if err := registry.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(registry),
		// Named, not left to the default: it fixes the names the dashboard
		// and the alerts use, and the exporter's default may change.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		return nil, err
	}
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	observer, err := idemotel.New(idemotel.WithMeterProvider(meters))
	if err != nil {
		_ = meters.Shutdown(context.Background())
		return nil, err
	}
	return &Telemetry{registry: registry, meters: meters, observer: observer}, nil
}

// Handler serves the Prometheus exposition of every metric (the text
// format, or OpenMetrics when the scraper asks for it).
func (t *Telemetry) Handler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// InstrumentPool makes the pool built from cfg record a span and the
// db.client.operation.duration metric for each statement, through otelpgx;
// call it before pgxpool.NewWithConfig. Statements' parameters are never
// recorded (otelpgx's default), so no key or payload reaches a span.
func (t *Telemetry) InstrumentPool(cfg *pgxpool.Config) {
	cfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithMeterProvider(t.meters))
}

// recordPool adds the pool's statistics (connections in use, idle,
// acquire waits, ...) to the metrics.
func (t *Telemetry) recordPool(pool *pgxpool.Pool) error {
	return otelpgx.RecordStats(pool, otelpgx.WithStatsMeterProvider(t.meters))
}

// Shutdown stops recording. Call it after the seller's Close; Handler
// serves no OpenTelemetry metric afterwards.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if err := t.meters.Shutdown(ctx); err != nil && !errors.Is(err, sdkmetric.ErrReaderShutdown) {
		return err
	}
	return nil
}
