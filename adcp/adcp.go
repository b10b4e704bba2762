// Package adcp is the part of an AdCP seller's task handling that does not
// depend on the transport: how a task's arguments carry idempotency_key,
// context, the version pin and the account; how a handler's value becomes
// the stored answer; and the shape of every answer — the body at the root
// with replayed, the current request's context and, for AdCP 3.1 and
// later, the envelope's status and adcp_version; or {adcp_error, context}.
// The MCP adapter (package adcpmcp) and the A2A adapter are thin layers
// over it, so that a key used over one transport replays over the other and
// both answer alike.
//
// A seller writes each task once, as a [Handler] of a [*Call], and
// registers it with a transport adapter. Run it idempotently with
// [Mutating] (any backend, through an idem.Guard) or [MutatingTx] (inside
// idem.RunInTx on Postgres); [Read] replays a read when the caller supplies
// a key and just runs it otherwise; [ReadOnly] gives a task outside the
// replay contract the same answer shapes.
//
// AdCP versions: the library implements the releases in
// [SupportedVersions]. A request pinned with adcp_version gets that release
// (or the newest supported one below it); a request with only the
// deprecated adcp_major_version comes from a client of AdCP 3.0, which had
// no adcp_version, and gets 3.0; a request with neither gets [Latest].
package adcp

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/jackc/pgx/v5"
)

// Call is one task invocation as a handler sees it.
type Call struct {
	// Tool is the task's name (MCP tool, A2A skill): the idempotency
	// operation.
	Tool string
	// Principal is the authenticated caller.
	Principal string
	// Account is the scope account of the request (see Options.AccountSalt),
	// "" when keys are scoped by principal alone.
	Account string
	// Key is the validated idempotency_key ("" when the task has none).
	Key string
	// Version is the AdCP release the request is served at.
	Version Version
	// Arguments are the task's arguments, a JSON object, as received.
	Arguments json.RawMessage
	// Context is the request's context object, as received (nil when
	// absent): a slice of Arguments. The answer echoes it by itself; a
	// handler needs it only for what it sends later, such as a task's
	// webhooks, which AdCP requires to echo the originating request's
	// context (keeping it keeps the whole arguments: copy it to keep
	// only it).
	Context json.RawMessage
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
	// RetryAfter is the top-level retry_after, in whole seconds (1 to
	// 3600), for transient errors; 0 omits it.
	RetryAfter int `json:"retry_after,omitempty"`
	// Details are code-specific details (error-details schemas).
	Details map[string]any `json:"details,omitempty"`
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
	// Arguments are the raw arguments; empty or null means {}. The Call a
	// handler gets holds slices of them (Arguments, Context), not copies:
	// a transport must not reuse their memory while a handler may keep
	// those.
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
	// AccountSalt, when set, scopes keys by (principal, account) as AdCP
	// 3.1 and later require: a request's account_id is used as it is, a
	// natural-key account ({brand, operator}) through idem.AccountScope
	// with this seller-local secret. Requests served at AdCP 3.0 stay
	// scoped by principal alone, as 3.0 specifies. Nil scopes every request
	// by principal alone.
	AccountSalt []byte
}

func (o *Options) logger() *slog.Logger {
	if o != nil && o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}
