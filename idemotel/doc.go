// Package idemotel records the work of package idem as OpenTelemetry
// metrics and spans: an [idem.Observer] to set as idem.Config.Observer.
//
//	obs, err := idemotel.New() // the global MeterProvider and TracerProvider
//	guard, err := idem.NewGuard(store, &idem.Config{Observer: obs})
//
// It is a module of its own, so that the core module never depends on
// OpenTelemetry. It uses the OpenTelemetry API only; the application
// chooses the SDK and the exporters (see the Prometheus example).
//
// # Metrics
//
// OpenTelemetry has no semantic conventions for idempotency (its registry
// has only cassandra.query.idempotent, a property of a database query), so
// the names are this package's own, all under the idempotency. prefix and
// named after the general OpenTelemetry naming rules. The instrumentation
// scope is [ScopeName].
//
//	name                                 instrument     unit     attributes
//	idempotency.calls                    Counter        {call}   operation, outcome, error.type
//	idempotency.call.duration            Histogram      s        operation, outcome, error.type
//	idempotency.duplicate.wait.duration  Histogram      s        operation, outcome, error.type
//	idempotency.active_calls             UpDownCounter  {call}   operation
//	idempotency.swept_entries            Counter        {entry}  none
//
// Every RunInTx and Do call counts once in idempotency.calls and
// idempotency.call.duration when it returns, and in
// idempotency.active_calls while it runs. idempotency.duplicate.wait.duration
// records only the calls that waited for a concurrent request with the
// same key (idem.Observation.Waited above zero); its outcome tells whether
// the wait ended in a replay or in in_flight. The histograms advise bucket
// boundaries from 1 ms to 30 s (0.001, 0.0025, 0.005, … 10, 30); an SDK view
// may replace them. idempotency.swept_entries counts the entries each sweep
// batch deleted.
//
// Through the Prometheus exporter with
// otlptranslator.UnderscoreEscapingWithSuffixes (the default of exporter
// v0.69.0, whose documentation says defaults may change: name it), the
// metrics are idempotency_calls_total, idempotency_call_duration_seconds
// (_bucket, _sum, _count), idempotency_duplicate_wait_duration_seconds,
// idempotency_active_calls and idempotency_swept_entries_total, with the
// labels idempotency_operation, idempotency_outcome and error_type (and
// the exporter's otel_scope_* labels).
//
// # Attributes
//
// The attributes are a closed set, and carry no key, principal or payload:
//
//   - idempotency.operation: idem.Request.Operation (the AdCP task name).
//     The server chooses it, from its own fixed set of tasks, so its
//     cardinality is that of the server's tasks; never put request data
//     in it.
//   - idempotency.outcome: executed, replayed, conflict, expired,
//     in_flight, rate_limited, invalid, or error.
//   - error.type (OpenTelemetry's stable attribute), only when the outcome
//     is error: handler_error, storage_error, canceled, unencodable,
//     tx_ended, undecodable, tx_conflict (the idem.Outcome values), or
//     _OTHER for an outcome this package does not know yet.
//
// So one operation has at most 15 series per metric. The outcomes the
// buyer causes and AdCP defines (conflict, expired, in_flight,
// rate_limited, invalid) have a value each, because each means something
// different to an operator; the failures of the server or of the call are
// folded into error, so that "error rate" is one query, and told apart by
// error.type.
//
// # Spans
//
// Each call has one span, of kind internal, named "idempotency
// <operation>" (for example "idempotency create_media_buy"). It starts
// when the call starts and ends when it returns; the handler runs with its
// context, so the spans the handler starts are its children. Its
// attributes are idempotency.operation, idempotency.outcome and, for
// errors, error.type. Its status is Error, with error.type as the
// description, exactly when the outcome is error; the AdCP refusals are
// the protocol working as designed, answers to the buyer rather than
// failures of the server, and leave the status unset, as do executed and
// replayed. Sweeps have no spans.
//
// An Observer is safe for concurrent use.
package idemotel
