package idem

import (
	"context"
	"errors"
	"time"
)

// Outcome is how an idempotent call ended, for metrics.
type Outcome string

// The outcomes of [RunInTx] and [Do].
const (
	OutcomeExecuted     Outcome = "executed"      // the handler ran and its answer was stored
	OutcomeReplayed     Outcome = "replayed"      // the stored answer was returned
	OutcomeConflict     Outcome = "conflict"      // IDEMPOTENCY_CONFLICT
	OutcomeExpired      Outcome = "expired"       // IDEMPOTENCY_EXPIRED
	OutcomeInFlight     Outcome = "in_flight"     // IDEMPOTENCY_IN_FLIGHT
	OutcomeRateLimited  Outcome = "rate_limited"  // RATE_LIMITED
	OutcomeInvalid      Outcome = "invalid"       // rejected before storage: key, principal, payload
	OutcomeHandlerError Outcome = "handler_error" // the handler failed; nothing was stored
	OutcomeStorageError Outcome = "storage_error" // the backend failed
	OutcomeCanceled     Outcome = "canceled"      // the context ended
	OutcomeUnencodable  Outcome = "unencodable"   // ErrUnencodable: the handler's value could not be stored
	OutcomeTxEnded      Outcome = "tx_ended"      // ErrTxEnded: the handler ended its transaction
	OutcomeUndecodable  Outcome = "undecodable"   // ErrUndecodable: the stored answer could not be read
	OutcomeTxConflict   Outcome = "tx_conflict"   // ErrTxConflict: serialization failure or deadlock
	OutcomeUnreadable   Outcome = "unreadable"    // ErrUnreadable: the stored answer could not be opened
)

// Observation describes one finished call to [RunInTx] or [Do]. It carries
// no key, principal or payload, so that it can go to metrics and logs as
// it is.
type Observation struct {
	// Operation is the request's operation (the AdCP task name).
	Operation string
	// Outcome is how the call ended.
	Outcome Outcome
	// Duration is the whole call, from its start to its return.
	Duration time.Duration
	// Waited is the part of Duration spent waiting for a concurrent request
	// with the same key: in this process, and the polls of a Guard. (A wait
	// inside a database statement shows in Duration only.)
	Waited time.Duration
}

// Observer watches the library at work, for metrics and traces (package
// idemotel implements it with OpenTelemetry). Its methods run on the
// caller's goroutine and must be quick; an Observer must be safe for
// concurrent use.
type Observer interface {
	// Begin is called when a RunInTx or Do call starts. The context it
	// returns (a span's, say) is the one the call and its handler run
	// with.
	Begin(ctx context.Context, operation string) context.Context
	// End is called once for each Begin, when the call returns.
	End(ctx context.Context, o Observation)
	// Swept is called after each sweep batch that deleted entries.
	Swept(ctx context.Context, deleted int)
}

// ObserverFunc is an [Observer] that only reports finished calls.
type ObserverFunc func(ctx context.Context, o Observation)

// Begin returns ctx.
func (f ObserverFunc) Begin(ctx context.Context, _ string) context.Context { return ctx }

// End calls f.
func (f ObserverFunc) End(ctx context.Context, o Observation) { f(ctx, o) }

// Swept does nothing.
func (f ObserverFunc) Swept(context.Context, int) {}

// errHandlerPanic stands for a handler's panic in an Observation.
var errHandlerPanic = errors.New("handler panicked")

// observed is one RunInTx or Do call as the Observer sees it.
type observed struct {
	observer  Observer
	operation string
	start     time.Time
	waited    time.Duration
}

// begin starts observing a call; it returns the context the call runs with.
func (s settings) begin(ctx context.Context, op string) (context.Context, observed) {
	o := observed{observer: s.observer, operation: op, start: time.Now()}
	if o.observer != nil {
		ctx = o.observer.Begin(ctx, op)
	}
	return ctx, o
}

// end is deferred by RunInTx and Do, with pointers to their named results:
// it reports the finished call, and a panic of the handler (which it sees
// as the deferred function itself) before letting it go on.
func (o *observed) end(ctx context.Context, replayed *bool, err *error) {
	if r := recover(); r != nil {
		o.report(ctx, false, errHandlerPanic)
		panic(r)
	}
	o.report(ctx, *replayed, *err)
}

func (o *observed) report(ctx context.Context, replayed bool, err error) {
	if o.observer == nil {
		return
	}
	o.observer.End(ctx, Observation{Operation: o.operation, Outcome: outcomeOf(replayed, err), Duration: time.Since(o.start), Waited: o.waited})
}

// swept reports a sweep batch.
func (s settings) swept(ctx context.Context, n int) {
	if s.observer != nil && n > 0 {
		s.observer.Swept(ctx, n)
	}
}

func outcomeOf(replayed bool, err error) Outcome {
	var e *Error
	switch {
	case err == nil && replayed:
		return OutcomeReplayed
	case err == nil:
		return OutcomeExecuted
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	case !errors.As(err, &e):
		return OutcomeHandlerError
	}
	switch e.kind {
	case ErrConflict:
		return OutcomeConflict
	case ErrExpired:
		return OutcomeExpired
	case ErrInFlight:
		return OutcomeInFlight
	case ErrRateLimited:
		return OutcomeRateLimited
	case ErrStorage:
		return OutcomeStorageError
	case ErrUnencodable:
		return OutcomeUnencodable
	case ErrTxEnded:
		return OutcomeTxEnded
	case ErrUndecodable:
		return OutcomeUndecodable
	case ErrTxConflict:
		return OutcomeTxConflict
	case ErrUnreadable:
		return OutcomeUnreadable
	default:
		return OutcomeInvalid
	}
}
