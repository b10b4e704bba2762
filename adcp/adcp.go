// Package adcp is the part of an AdCP seller's task handling that does not
// depend on the transport: how a task's arguments carry idempotency_key and
// context, how a handler's value becomes the stored answer, and the shape
// of every answer — the body at the root with replayed and the current
// request's context, or {adcp_error, context}. The MCP adapter (package
// adcpmcp) and the A2A adapter are thin layers over it, so that a key used
// over one transport replays over the other and both answer alike.
//
// A seller writes each task once, as a [Handler] of a [*Call], and
// registers it with a transport adapter. Run it idempotently with
// [Mutating] (any backend, through an idem.Guard) or [MutatingTx] (inside
// idem.RunInTx on Postgres); [ReadOnly] gives a read the same answer shapes.
package adcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/adcp-go/idempotency/idem"
)

// Call is one task invocation as a handler sees it.
type Call struct {
	// Tool is the task's name (MCP tool, A2A skill): the idempotency
	// operation.
	Tool string
	// Principal is the authenticated caller.
	Principal string
	// Key is the validated idempotency_key ("" for read-only tasks).
	Key string
	// Arguments are the task's arguments, a JSON object, as received.
	Arguments json.RawMessage
}

// Decode unmarshals the arguments into v. A mismatch is an INVALID_REQUEST
// [*Error].
func (c *Call) Decode(v any) error {
	if err := json.Unmarshal(c.Arguments, v); err != nil {
		return &Error{Code: "INVALID_REQUEST", Message: "arguments do not match the task's schema: " + err.Error(), Recovery: "correctable"}
	}
	return nil
}

// Error is an AdCP error a handler returns to answer with a specific code,
// for example INVALID_REQUEST for an empty packages list. Any other error
// from a handler is answered as SERVICE_UNAVAILABLE without details.
type Error struct {
	Code     string `json:"code"`
	Message  string `json:"message"`
	Recovery string `json:"recovery,omitempty"`
	Field    string `json:"field,omitempty"`
}

// Error implements error.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Handler is a task's work: it gets the call and returns the value whose
// JSON encoding (an object) is the body of the answer.
type Handler[Out any] func(ctx context.Context, call *Call) (Out, error)

// TxHandler is a task's work inside idem.RunInTx: every business write goes
// through tx, which commits with the stored answer.
type TxHandler[Out any] func(ctx context.Context, tx pgx.Tx, call *Call) (Out, error)

// Task is a task invocation as a transport hands it over.
type Task struct {
	// Tool is the task's name.
	Tool string
	// Principal is the authenticated caller ("" fails closed).
	Principal string
	// Arguments are the raw arguments; empty means {}.
	Arguments json.RawMessage
}

// Answer is what a transport sends back: a JSON object for its result, and
// whether it is an error (MCP isError, A2A failed or an error DataPart).
type Answer struct {
	Body    json.RawMessage
	IsError bool
}

// Runner answers a task. The transport adapters turn a Runner into their
// own handler type.
type Runner func(ctx context.Context, t Task) Answer

// Options configures the runners of this package. A nil *Options means the
// defaults.
type Options struct {
	// Logger receives internal failures (never keys or payloads). Defaults
	// to slog.Default().
	Logger *slog.Logger
}

func (o *Options) logger() *slog.Logger {
	if o != nil && o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Mutating returns the runner of a mutating task whose work runs through g
// at most once per (principal, idempotency_key):
//
//   - idempotency_key is read from the arguments and validated before
//     anything else (missing or malformed: INVALID_REQUEST, recovery
//     correctable, field idempotency_key), and so is the principal;
//   - requests are compared by idem.CanonicalJSONSHA256 of the arguments;
//   - a success puts h's value at the root of the answer, with replayed
//     false on a fresh run and true on a replay, and the current request's
//     context echoed (the stored body never holds context);
//   - an error is {adcp_error, context}; IDEMPOTENCY_CONFLICT carries code
//     and message only.
//
// h's value must encode as a JSON object. If it cannot be encoded after h
// succeeded, the work is done: the key is kept and every retry gets
// CONFIGURATION_ERROR (idem.ErrUnencodable), never a second run.
func Mutating[Out any](g *idem.Guard, opts *Options, h Handler[Out]) Runner {
	return mutating(opts, func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error) {
		return idem.Do(ctx, g, r, func(ctx context.Context) (json.RawMessage, error) {
			v, err := h(ctx, c)
			if err != nil {
				return nil, err
			}
			return EncodeBody(v) // its failures match idem.ErrUnencodable
		})
	})
}

// MutatingTx is [Mutating] for the Postgres store: h runs inside the
// transaction of idem.RunInTx on db, so its writes and the stored answer
// commit together. A value that cannot be encoded rolls everything back.
func MutatingTx[Out any](s *idem.Store, db idem.DB, opts *Options, h TxHandler[Out]) Runner {
	return mutating(opts, func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error) {
		return idem.RunInTx(ctx, s, db, r, func(ctx context.Context, tx pgx.Tx) (json.RawMessage, error) {
			v, err := h(ctx, tx, c)
			if err != nil {
				return nil, err
			}
			return EncodeBody(v)
		})
	})
}

// ReadOnly returns the runner of a task that changes nothing (get_*,
// list_*): no idempotency key, but the same answer shapes (the body at the
// root, context echoed, errors as adcp_error).
func ReadOnly[Out any](opts *Options, h Handler[Out]) Runner {
	return func(ctx context.Context, t Task) Answer {
		args, err := ParseArguments(t.Arguments)
		if err != nil {
			return ErrorAnswer(opts, nil, err)
		}
		v, err := h(ctx, &Call{Tool: t.Tool, Principal: t.Principal, Arguments: args.Raw})
		var body json.RawMessage
		if err == nil {
			body, err = EncodeBody(v)
		}
		if err != nil {
			return ErrorAnswer(opts, args.Context, err)
		}
		return SuccessAnswer(body, nil, args.Context)
	}
}

type runFunc func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error)

func mutating(opts *Options, run runFunc) Runner {
	return func(ctx context.Context, t Task) Answer {
		args, err := ParseArguments(t.Arguments)
		if err != nil {
			return ErrorAnswer(opts, nil, err)
		}
		key, err := args.IdempotencyKey()
		if err != nil {
			return ErrorAnswer(opts, args.Context, err)
		}
		c := &Call{Tool: t.Tool, Principal: t.Principal, Key: key, Arguments: args.Raw}
		res, err := run(ctx, idem.Request{Principal: c.Principal, Key: key, Operation: c.Tool, Payload: args.Raw}, c)
		if err != nil {
			return ErrorAnswer(opts, args.Context, err)
		}
		return SuccessAnswer(res.Response, &res.Replayed, args.Context)
	}
}

// Arguments are a task's arguments with the members this package reads
// itself.
type Arguments struct {
	// Raw is the whole arguments object, as received.
	Raw json.RawMessage
	// Key is the idempotency_key member as sent, nil when absent.
	Key json.RawMessage
	// Context is the context member as sent, nil when absent.
	Context json.RawMessage
}

// ParseArguments reads a task's arguments: a JSON object (empty input means
// {}). The members idempotency_key and context are matched by their exact
// names, as the canonical hash's exclusion list matches them:
// encoding/json would also take "IDEMPOTENCY_KEY" for a struct field, so
// the members go through a map. Anything but an object is INVALID_REQUEST.
func ParseArguments(raw json.RawMessage) (Arguments, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage(`{}`)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return Arguments{}, &Error{Code: "INVALID_REQUEST", Message: "task arguments must be a JSON object", Recovery: "correctable"}
	}
	return Arguments{Raw: raw, Key: fields["idempotency_key"], Context: fields["context"]}, nil
}

// IdempotencyKey returns the validated idempotency_key, or an idem error
// (INVALID_REQUEST, field idempotency_key) saying what is wrong without
// echoing it.
func (a Arguments) IdempotencyKey() (string, error) {
	if len(a.Key) == 0 || string(a.Key) == "null" {
		return "", idem.ValidateKey("")
	}
	var key string
	if err := json.Unmarshal(a.Key, &key); err != nil {
		return "", idem.NewError(idem.ErrInvalidKey, "idempotency_key must be a string")
	}
	if err := idem.ValidateKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// EncodeBody encodes a handler's value as the stored body: a JSON object
// without the envelope fields added per answer (context, replayed). Its
// failures match idem.ErrUnencodable.
func EncodeBody(v any) (json.RawMessage, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("adcp: encoding the handler's answer: %w: %w", idem.ErrUnencodable, err)
	}
	if len(body) < 2 || body[0] != '{' {
		return nil, fmt.Errorf("adcp: the handler's answer is not a JSON object: %w", idem.ErrUnencodable)
	}
	if !bytes.Contains(body, []byte(`"context"`)) && !bytes.Contains(body, []byte(`"replayed"`)) {
		return body, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("adcp: %w: %w", idem.ErrUnencodable, err)
	}
	delete(fields, "context")
	delete(fields, "replayed")
	return json.Marshal(fields)
}

// SuccessAnswer answers with body at the root, plus replayed (when set) and
// the request's context (when sent).
func SuccessAnswer(body json.RawMessage, replayed *bool, reqContext json.RawMessage) Answer {
	out := make([]byte, 0, len(body)+len(reqContext)+32)
	out = append(out, body[:len(body)-1]...)
	sep := func() {
		if len(out) > 1 {
			out = append(out, ',')
		}
	}
	if replayed != nil {
		sep()
		out = append(out, `"replayed":`...)
		out = strconv.AppendBool(out, *replayed)
	}
	if len(reqContext) > 0 {
		sep()
		out = append(out, `"context":`...)
		out = append(out, reqContext...)
	}
	out = append(out, '}')
	return Answer{Body: out}
}

// ErrorAnswer answers with {adcp_error, context}. An [*Error] keeps its
// fields; an idem error is answered in its AdCP form (idem.Wire); anything
// else becomes SERVICE_UNAVAILABLE without details, and is logged (as are
// storage failures), never with keys or payloads.
func ErrorAnswer(opts *Options, reqContext json.RawMessage, err error) Answer {
	var wire any
	var ae *Error
	var ie *idem.Error
	switch {
	case errors.As(err, &ae):
		wire = ae
	case errors.As(err, &ie):
		wire = idem.Wire(err)
		if errors.Is(err, idem.ErrStorage) {
			opts.logger().Error("adcp: idempotency storage failed", "error", err)
		}
	default:
		opts.logger().Error("adcp: handler failed", "error", err)
		wire = idem.Wire(err) // SERVICE_UNAVAILABLE, no details
	}
	body := map[string]any{"adcp_error": wire}
	if len(reqContext) > 0 {
		body["context"] = reqContext
	}
	out, _ := json.Marshal(body)
	return Answer{Body: out, IsError: true}
}

// HTTPStatus is the HTTP status for an AdCP error code, for transports that
// answer errors with an HTTP status (MCP and A2A answer errors inside a 200
// response instead): 400 for invalid requests, 401 without credentials, 409
// for idempotency conflicts and keys in flight, 422 for expired keys, 429
// when rate limited, 500 for seller-side misconfiguration, 503 otherwise.
func HTTPStatus(code string) int {
	switch code {
	case "INVALID_REQUEST", "VALIDATION_ERROR":
		return http.StatusBadRequest
	case "AUTH_REQUIRED", "AUTH_MISSING", "AUTH_INVALID":
		return http.StatusUnauthorized
	case "IDEMPOTENCY_CONFLICT", "IDEMPOTENCY_IN_FLIGHT", "CONFLICT":
		return http.StatusConflict
	case "IDEMPOTENCY_EXPIRED":
		return http.StatusUnprocessableEntity
	case "RATE_LIMITED":
		return http.StatusTooManyRequests
	case "CONFIGURATION_ERROR":
		return http.StatusInternalServerError
	default:
		return http.StatusServiceUnavailable
	}
}
