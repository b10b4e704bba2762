package idemotel

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/adcp-go/idempotency/idem"
)

// ScopeName is the instrumentation scope of the meter and the tracer: the
// import path of this package.
const ScopeName = "github.com/adcp-go/idempotency/idemotel"

// The attribute keys. They are the only attributes this package records.
const (
	keyOperation = "idempotency.operation"
	keyOutcome   = "idempotency.outcome"
	keyErrorType = "error.type" // OpenTelemetry's stable error.type
)

// outcomeError is the idempotency.outcome of every failure; error.type
// tells which.
const outcomeError = "error"

// errorTypeOther is the error.type of an outcome this package does not know
// (one added to package idem later): OpenTelemetry's fallback value, so that
// the set of values stays closed.
const errorTypeOther = "_OTHER"

// durationBuckets are the bucket boundaries, in seconds, of both duration
// histograms: 1 ms to 30 s, about three to a decade.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Observer is an [idem.Observer] that records OpenTelemetry metrics and
// spans. Create it with [New] and set it as idem.Config.Observer; one
// Observer may serve any number of Stores and Guards. It is safe for
// concurrent use; the zero value is not usable.
type Observer struct {
	tracer   trace.Tracer
	calls    metric.Int64Counter
	duration metric.Float64Histogram
	waited   metric.Float64Histogram
	active   metric.Int64UpDownCounter
	swept    metric.Int64Counter
}

var _ idem.Observer = (*Observer)(nil)

// Option configures [New].
type Option func(*config)

type config struct {
	meters  metric.MeterProvider
	tracers trace.TracerProvider
}

// WithMeterProvider sets the MeterProvider the metrics are recorded with. A
// nil provider is ignored. Defaults to the global one (otel.GetMeterProvider).
func WithMeterProvider(p metric.MeterProvider) Option {
	return func(c *config) {
		if p != nil {
			c.meters = p
		}
	}
}

// WithTracerProvider sets the TracerProvider the spans are started with. A
// nil provider is ignored. Defaults to the global one
// (otel.GetTracerProvider).
func WithTracerProvider(p trace.TracerProvider) Option {
	return func(c *config) {
		if p != nil {
			c.tracers = p
		}
	}
}

// New returns an Observer that records through the providers of opts (the
// global providers by default), under the instrumentation scope
// [ScopeName]. It fails only if the MeterProvider refuses an instrument.
func New(opts ...Option) (*Observer, error) {
	c := config{meters: otel.GetMeterProvider(), tracers: otel.GetTracerProvider()}
	for _, opt := range opts {
		opt(&c)
	}
	m := c.meters.Meter(ScopeName)
	o := &Observer{tracer: c.tracers.Tracer(ScopeName)}
	var errs [5]error
	o.calls, errs[0] = m.Int64Counter("idempotency.calls",
		metric.WithUnit("{call}"),
		metric.WithDescription("Finished idempotent calls (RunInTx and Do), by operation and outcome."))
	o.duration, errs[1] = m.Float64Histogram("idempotency.call.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of idempotent calls, from start to return, by operation and outcome."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	o.waited, errs[2] = m.Float64Histogram("idempotency.duplicate.wait.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time a call spent waiting for a concurrent request with the same key, for the calls that waited."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	o.active, errs[3] = m.Int64UpDownCounter("idempotency.active_calls",
		metric.WithUnit("{call}"),
		metric.WithDescription("Idempotent calls in progress, by operation."))
	o.swept, errs[4] = m.Int64Counter("idempotency.swept_entries",
		metric.WithUnit("{entry}"),
		metric.WithDescription("Entries deleted by sweeps: tombstones past their retention and abandoned claims."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return o, nil
}

// call is what Begin leaves in the context for End.
type call struct {
	span      trace.Span
	operation attribute.KeyValue
}

type callKey struct{}

// Begin implements [idem.Observer]: it starts the call's span, which the
// returned context carries to the handler (a span the handler starts is
// its child), and counts the call as active.
func (o *Observer) Begin(ctx context.Context, operation string) context.Context {
	op := attribute.String(keyOperation, operation)
	ctx, span := o.tracer.Start(ctx, spanName(operation),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(op))
	o.active.Add(ctx, 1, metric.WithAttributes(op))
	return context.WithValue(ctx, callKey{}, &call{span: span, operation: op})
}

// End implements [idem.Observer]: it records the finished call and ends its
// span. The span's status is Error for the outcomes counted as "error"
// only; the refusals AdCP defines (conflict, expired, in_flight,
// rate_limited, invalid) are answers to the buyer, not failures of the
// server, and leave it unset.
func (o *Observer) End(ctx context.Context, ob idem.Observation) {
	outcome, errorType := classify(ob.Outcome)
	attrs := [3]attribute.KeyValue{attribute.String(keyOperation, ob.Operation), attribute.String(keyOutcome, outcome)}
	n := 2
	if errorType != "" {
		attrs[2] = attribute.String(keyErrorType, errorType)
		n = 3
	}
	opt := metric.WithAttributes(attrs[:n]...)
	o.calls.Add(ctx, 1, opt)
	o.duration.Record(ctx, ob.Duration.Seconds(), opt)
	if ob.Waited > 0 {
		o.waited.Record(ctx, ob.Waited.Seconds(), opt)
	}
	c, ok := ctx.Value(callKey{}).(*call)
	if !ok {
		return // no Begin of ours: no span to end, nothing counted as active
	}
	o.active.Add(ctx, -1, metric.WithAttributes(c.operation))
	c.span.SetAttributes(attrs[1:n]...)
	if errorType != "" {
		c.span.SetStatus(codes.Error, errorType)
	}
	c.span.End()
}

// Swept implements [idem.Observer]: it counts the entries a sweep batch
// deleted.
func (o *Observer) Swept(ctx context.Context, deleted int) {
	o.swept.Add(ctx, int64(deleted))
}

// spanName is "idempotency <operation>".
func spanName(operation string) string {
	if operation == "" {
		return "idempotency"
	}
	return "idempotency " + operation
}

// classify maps an idem.Outcome to the idempotency.outcome attribute and,
// for failures, the error.type attribute. Outcomes it does not know are
// failures of type _OTHER, so neither attribute ever takes a value outside
// the documented sets.
func classify(o idem.Outcome) (outcome, errorType string) {
	switch o {
	case idem.OutcomeExecuted, idem.OutcomeReplayed, idem.OutcomeConflict, idem.OutcomeExpired,
		idem.OutcomeInFlight, idem.OutcomeRateLimited, idem.OutcomeInvalid:
		return string(o), ""
	case idem.OutcomeHandlerError, idem.OutcomeStorageError, idem.OutcomeCanceled, idem.OutcomeUnencodable,
		idem.OutcomeTxEnded, idem.OutcomeUndecodable, idem.OutcomeTxConflict:
		return outcomeError, string(o)
	default:
		return outcomeError, errorTypeOther
	}
}
