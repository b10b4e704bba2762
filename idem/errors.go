package idem

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Sentinel errors. Every error the package returns for one of these
// conditions matches the sentinel with [errors.Is]; most are an [*Error],
// which [errors.As] exposes with its AdCP code, recovery class and retry
// hint.
var (
	// ErrMissingKey: the request carries no idempotency key.
	ErrMissingKey = errors.New("idempotency_key is required")
	// ErrInvalidKey: the key does not match ^[A-Za-z0-9_.:-]{16,255}$.
	ErrInvalidKey = errors.New("idempotency_key is malformed")
	// ErrMissingPrincipal: no principal was given. The package fails closed:
	// a request that cannot be attributed never shares a namespace.
	ErrMissingPrincipal = errors.New("principal is required")
	// ErrMissingOperation: no operation (tool name) was given.
	ErrMissingOperation = errors.New("operation is required")
	// ErrInvalidOperation: the operation is not a name of 1 to 255
	// characters, each a letter, digit, '_', '.', ':', '-' or '/'.
	ErrInvalidOperation = errors.New("operation is malformed")
	// ErrInvalidPayload: the payload is not a JSON object that RFC 8785 can
	// canonicalise (invalid UTF-8, duplicate names, non-finite numbers, too
	// deep or too large).
	ErrInvalidPayload = errors.New("payload is not canonicalisable JSON")
	// ErrConflict: the key was used before with a different payload or
	// operation.
	ErrConflict = errors.New("idempotency_key was used with a different request")
	// ErrInFlight: another request with the key is still running and did not
	// finish within the wait bound.
	ErrInFlight = errors.New("a request with this idempotency_key is still in flight")
	// ErrExpired: the key is past the replay window; its stored answer is
	// gone but the key is still remembered.
	ErrExpired = errors.New("idempotency_key is past the replay window")
	// ErrRateLimited: the principal stores new keys faster than the insert
	// rate limit allows.
	ErrRateLimited = errors.New("too many new idempotency keys")
	// ErrStorage: the backend failed (connection lost, timeout, ...). Whether
	// the work ran is unknown to the caller only if the error says so; the
	// library never reports as done work that it did not store.
	ErrStorage = errors.New("idempotency storage failed")
	// ErrUnencodable: the handler succeeded, but its value cannot be encoded
	// as JSON, so no answer could be stored. A [Guard] keeps the key (the
	// work is done and must not run again): every retry gets this error
	// until the key expires. [RunInTx] rolls everything back instead, so a
	// retry runs again. A handler may return an error matching ErrUnencodable
	// itself to say "my work is done but I cannot produce its answer".
	ErrUnencodable = errors.New("the answer cannot be encoded")
	// ErrTxEnded: a [RunInTx] handler ended the transaction it was given
	// (for example with tx.Exec(ctx, "COMMIT")), so the claim, the business
	// writes and the answer no longer commit together. The key is kept
	// without an answer: every retry gets this error until the key expires,
	// never a second run and never IDEMPOTENCY_IN_FLIGHT. Calling Commit or
	// Rollback on the handler's pgx.Tx is refused with this error and ends
	// nothing.
	ErrTxEnded = errors.New("the handler ended the transaction")
	// ErrUndecodable: the stored answer cannot be decoded into the handler's
	// value type (the type changed since the answer was stored).
	ErrUndecodable = errors.New("the stored answer cannot be decoded")
	// ErrUnreadable: the stored answer cannot be opened (Config.Sealer): it
	// is sealed under a key the seller no longer holds, was altered, or was
	// copied from another key or principal.
	ErrUnreadable = errors.New("the stored answer cannot be opened")
	// ErrTxConflict: the database aborted the transaction because of a
	// concurrent one (a serialization failure, SQLSTATE 40001, or a
	// deadlock, 40P01). Nothing was stored; the same request may be retried.
	ErrTxConflict = errors.New("the transaction conflicted with a concurrent one")
	// ErrHandlerTimeout is the cause (context.Cause) of the end of a
	// handler's context when the handler runs past Config.InFlightMax, the
	// in-flight bound: the request is then treated as failed and its key
	// released, as AdCP requires.
	ErrHandlerTimeout = errors.New("the handler ran past the in-flight bound (Config.InFlightMax)")
	// ErrLeaseLost is the cause of an [ErrStorage] error from a [Guard] whose
	// claim was taken over by another request before the answer was stored:
	// the backend stopped answering the lease renewals for longer than the
	// lease. The answer is not stored.
	ErrLeaseLost = errors.New("the idempotency claim was lost to another request")
)

// Code is an AdCP error code.
type Code string

// The AdCP error codes this package produces.
const (
	CodeInvalidRequest      Code = "INVALID_REQUEST"
	CodeAuthRequired        Code = "AUTH_REQUIRED"
	CodeIdempotencyConflict Code = "IDEMPOTENCY_CONFLICT"
	CodeIdempotencyInFlight Code = "IDEMPOTENCY_IN_FLIGHT"
	CodeIdempotencyExpired  Code = "IDEMPOTENCY_EXPIRED"
	CodeRateLimited         Code = "RATE_LIMITED"
	CodeServiceUnavailable  Code = "SERVICE_UNAVAILABLE"
	CodeConfigurationError  Code = "CONFIGURATION_ERROR"
)

// Recovery is the AdCP recovery class of an error: what the caller should do.
type Recovery string

// The AdCP recovery classes.
const (
	// RecoveryCorrectable: the caller must change the request.
	RecoveryCorrectable Recovery = "correctable"
	// RecoveryTransient: the same request may succeed later.
	RecoveryTransient Recovery = "transient"
	// RecoveryTerminal: do not retry.
	RecoveryTerminal Recovery = "terminal"
)

// adcpClass is the single table that maps each condition to its AdCP code
// and recovery class.
var adcpClass = map[error]struct {
	code     Code
	recovery Recovery
	field    string
}{
	ErrMissingKey:       {CodeInvalidRequest, RecoveryCorrectable, "idempotency_key"},
	ErrInvalidKey:       {CodeInvalidRequest, RecoveryCorrectable, "idempotency_key"},
	ErrMissingPrincipal: {CodeAuthRequired, RecoveryCorrectable, ""},
	ErrMissingOperation: {CodeInvalidRequest, RecoveryCorrectable, ""},
	ErrInvalidOperation: {CodeInvalidRequest, RecoveryCorrectable, ""},
	ErrInvalidPayload:   {CodeInvalidRequest, RecoveryCorrectable, ""},
	ErrConflict:         {CodeIdempotencyConflict, RecoveryCorrectable, ""},
	ErrInFlight:         {CodeIdempotencyInFlight, RecoveryTransient, ""},
	ErrExpired:          {CodeIdempotencyExpired, RecoveryCorrectable, ""},
	ErrRateLimited:      {CodeRateLimited, RecoveryTransient, ""},
	ErrStorage:          {CodeServiceUnavailable, RecoveryTransient, ""},
	ErrTxConflict:       {CodeServiceUnavailable, RecoveryTransient, ""},
	// A seller-side defect that a retry cannot mend: AdCP's code for it is
	// CONFIGURATION_ERROR, terminal.
	ErrUnencodable: {CodeConfigurationError, RecoveryTerminal, ""},
	ErrTxEnded:     {CodeConfigurationError, RecoveryTerminal, ""},
	ErrUndecodable: {CodeConfigurationError, RecoveryTerminal, ""},
	ErrUnreadable:  {CodeConfigurationError, RecoveryTerminal, ""},
}

// Error is the error type for every condition with an AdCP code. Use
// [errors.Is] with a sentinel to test the condition and [errors.As] to read
// the details:
//
//	var e *idem.Error
//	if errors.As(err, &e) && e.RetryAfter > 0 { ... }
//
// A conflict error never carries anything about the stored request or
// response.
type Error struct {
	// Code is the AdCP error code.
	Code Code
	// Recovery is the AdCP recovery class.
	Recovery Recovery
	// Message is a human-readable description, safe to show to the caller.
	Message string
	// Field names the offending request field, if there is one.
	Field string
	// RetryAfter is how long the caller should wait before retrying, for
	// transient errors; zero otherwise.
	RetryAfter time.Duration

	kind  error // the sentinel this error matches
	cause error // the underlying error, if any
}

// NewError returns the *Error for kind, one of this package's sentinels
// (ErrInvalidKey, ErrConflict, ...), with msg as its message (the
// sentinel's own text when msg is empty). Adapters and handlers use it to
// answer a condition in this package's vocabulary. msg is shown to the
// caller: it must not carry keys, payloads or internal details. NewError
// panics if kind is not such a sentinel.
func NewError(kind error, msg string) *Error { return newError(kind, msg) }

func newError(kind error, msg string) *Error {
	c, ok := adcpClass[kind]
	if !ok {
		panic(fmt.Sprintf("idem: no AdCP class for %v", kind))
	}
	if msg == "" {
		msg = kind.Error()
	}
	return &Error{Code: c.code, Recovery: c.recovery, Field: c.field, Message: msg, kind: kind}
}

func storageError(op string, err error) *Error {
	e := newError(ErrStorage, "idempotency storage is unavailable")
	e.cause = fmt.Errorf("%s: %w", op, err)
	return e
}

// Error implements error.
func (e *Error) Error() string {
	if e.cause != nil {
		return "idem: " + e.Message + ": " + e.cause.Error()
	}
	return "idem: " + e.Message
}

// Is reports whether target is the sentinel this error stands for.
func (e *Error) Is(target error) bool { return target != nil && target == e.kind }

// Unwrap returns the underlying cause (a driver error, a JSON syntax error),
// if any.
func (e *Error) Unwrap() error { return e.cause }

// WireError is the AdCP wire form of an error (core/error.json), the value
// of structuredContent.adcp_error (MCP) or of the task error (A2A).
type WireError struct {
	Code     string `json:"code"`
	Message  string `json:"message"`
	Recovery string `json:"recovery,omitempty"`
	Field    string `json:"field,omitempty"`
	// RetryAfter is the top-level retry_after of AdCP 3.2: whole seconds in
	// [1, 3600], set for transient errors that say when to come back
	// (IDEMPOTENCY_IN_FLIGHT, RATE_LIMITED).
	RetryAfter int `json:"retry_after,omitempty"`
}

// Wire returns the AdCP wire form of err. Errors of this package keep their
// code; any other error becomes SERVICE_UNAVAILABLE with a generic message,
// so that internal details never reach the caller.
//
// IDEMPOTENCY_CONFLICT carries code, message and recovery (correctable)
// only: AdCP forbids anything (a field, a suggestion, details, a hash, the
// stored request or answer) that could turn key reuse into a read oracle.
func Wire(err error) WireError {
	var e *Error
	if !errors.As(err, &e) {
		e = newError(ErrStorage, "internal error")
	}
	w := WireError{Code: string(e.Code), Message: e.Message, Recovery: string(e.Recovery)}
	if e.Code == CodeIdempotencyConflict {
		return w
	}
	w.Field = e.Field
	if e.RetryAfter > 0 {
		w.RetryAfter = min(max(int(math.Ceil(e.RetryAfter.Seconds())), 1), 3600)
	}
	return w
}
