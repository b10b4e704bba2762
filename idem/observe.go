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
)

// Observation describes one finished call to [RunInTx] or [Do]. It carries
// no key, principal or payload, so that it can go to metrics and logs as
// it is.
type Observation struct {
	Operation string
	Outcome   Outcome
	Duration  time.Duration
}

// errHandlerPanic stands for a handler's panic in an Observation.
var errHandlerPanic = errors.New("handler panicked")

// observeCall is deferred by RunInTx and Do, with pointers to their named
// results: it reports the finished call, and a panic of the handler (which
// it sees as the deferred function itself) before letting it go on.
func (s settings) observeCall(ctx context.Context, op string, start time.Time, replayed *bool, err *error) {
	if r := recover(); r != nil {
		s.observe(ctx, op, start, false, errHandlerPanic)
		panic(r)
	}
	s.observe(ctx, op, start, *replayed, *err)
}

// observe reports a finished call to cfg.Observe, if set.
func (s settings) observe(ctx context.Context, op string, start time.Time, replayed bool, err error) {
	if s.observer == nil {
		return
	}
	s.observer(ctx, Observation{Operation: op, Outcome: outcomeOf(replayed, err), Duration: time.Since(start)})
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
	default:
		return OutcomeInvalid
	}
}
