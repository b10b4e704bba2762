// Package adcpmcp puts AdCP idempotency in front of tools served with the
// official MCP Go SDK (github.com/modelcontextprotocol/go-sdk).
//
// [Mutating] (any [idem.Backend] through an [idem.Guard]) and [MutatingTx]
// (Postgres, inside [idem.RunInTx]) turn a handler into an mcp.ToolHandler
// that does what AdCP asks of a seller's mutating task:
//
//   - idempotency_key is read from the tool arguments and validated before
//     anything else (missing or malformed: INVALID_REQUEST, recovery
//     correctable, field idempotency_key), and so is the principal;
//   - requests are compared by [idem.CanonicalJSONSHA256] of the arguments;
//   - a success puts the handler's body at the root of structuredContent,
//     with replayed false on a fresh run and true on a replay, and the
//     current request's context echoed (the stored body never holds context);
//   - every error is a tool result with isError and structuredContent
//     {adcp_error, context}; IDEMPOTENCY_CONFLICT carries code and message
//     only.
//
// Register tools with [AddTool], which keeps idempotency_key out of the
// input schema's required list (otherwise the SDK would reject a call
// without it before the handler could answer INVALID_REQUEST), and serve
// them behind [AcceptJSON] so that a bare JSON-only tools/call gets a JSON
// answer.
package adcpmcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/idem"
)

// Options configures the handlers of this package. A nil *Options means the
// defaults.
type Options struct {
	// Principal returns the authenticated caller of a request; keys are
	// scoped by it. Defaults to the UserID of the token that
	// auth.RequireBearerToken verified. An empty principal fails closed
	// (AUTH_REQUIRED); it is never a shared namespace.
	Principal func(ctx context.Context, req *mcp.CallToolRequest) string
	// Logger receives internal failures (never keys or payloads). Defaults
	// to slog.Default().
	Logger *slog.Logger
}

func (o *Options) principal(ctx context.Context, req *mcp.CallToolRequest) string {
	if o != nil && o.Principal != nil {
		return o.Principal(ctx, req)
	}
	if req.Extra != nil && req.Extra.TokenInfo != nil {
		return req.Extra.TokenInfo.UserID
	}
	return ""
}

func (o *Options) logger() *slog.Logger {
	if o != nil && o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Call is a tool call as a handler sees it.
type Call struct {
	// Tool is the tool's name, the idempotency operation.
	Tool string
	// Principal is the authenticated caller.
	Principal string
	// Key is the validated idempotency_key ("" for read-only tools).
	Key string
	// Arguments are the tool arguments, a JSON object.
	Arguments json.RawMessage
}

// Decode unmarshals the arguments into v.
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

// Mutating returns the handler of a mutating tool whose work runs through g
// at most once per (principal, idempotency_key). h's value must encode as a
// JSON object: it becomes the body of structuredContent.
func Mutating[Out any](g *idem.Guard, opts *Options, h func(ctx context.Context, call *Call) (Out, error)) mcp.ToolHandler {
	return mutating(opts, func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error) {
		return idem.Do(ctx, g, r, func(ctx context.Context) (json.RawMessage, error) {
			v, err := h(ctx, c)
			if err != nil {
				return nil, err
			}
			// Past this point the work is done: an answer that cannot be
			// encoded matches idem.ErrUnencodable, so the key is kept and no
			// retry runs the work again.
			return encodeBody(v)
		})
	})
}

// MutatingTx is [Mutating] for the Postgres store: h runs inside the
// transaction of [idem.RunInTx] on db, so its writes and the stored answer
// commit together.
func MutatingTx[Out any](s *idem.Store, db idem.Beginner, opts *Options, h func(ctx context.Context, tx pgx.Tx, call *Call) (Out, error)) mcp.ToolHandler {
	return mutating(opts, func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error) {
		return idem.RunInTx(ctx, s, db, r, func(ctx context.Context, tx pgx.Tx) (json.RawMessage, error) {
			v, err := h(ctx, tx, c)
			if err != nil {
				return nil, err
			}
			return encodeBody(v) // a failure rolls everything back
		})
	})
}

// ReadOnly returns the handler of a tool that changes nothing (get_*,
// list_*): no idempotency key, but the same answer shapes (the body at the
// root, context echoed, errors as adcp_error).
func ReadOnly[Out any](opts *Options, h func(ctx context.Context, call *Call) (Out, error)) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		args, top, err := arguments(req)
		if err != nil {
			return errorResult(opts, nil, err), nil
		}
		v, err := h(ctx, &Call{Tool: req.Params.Name, Principal: opts.principal(ctx, req), Arguments: args})
		var body json.RawMessage
		if err == nil {
			body, err = encodeBody(v)
		}
		if err != nil {
			return errorResult(opts, top.Context, err), nil
		}
		return successResult(body, nil, top.Context), nil
	}
}

// topLevel holds the members of the arguments this package reads itself.
type topLevel struct {
	Key     json.RawMessage
	Context json.RawMessage
}

// arguments reads the tool arguments. The member names are matched exactly,
// as the hash's exclusion list matches them: encoding/json would also take
// "IDEMPOTENCY_KEY" for a struct field, so the members go through a map.
func arguments(req *mcp.CallToolRequest) (json.RawMessage, topLevel, error) {
	var top topLevel
	args := req.Params.Arguments
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage(`{}`)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(args, &fields); err != nil || fields == nil {
		return nil, top, &Error{Code: "INVALID_REQUEST", Message: "tool arguments must be a JSON object", Recovery: "correctable"}
	}
	top.Key, top.Context = fields["idempotency_key"], fields["context"]
	return args, top, nil
}

type runFunc func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error)

func mutating(opts *Options, run runFunc) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		args, top, err := arguments(req)
		if err != nil {
			return errorResult(opts, nil, err), nil
		}
		key, err := keyOf(top.Key)
		if err != nil {
			return errorResult(opts, top.Context, err), nil
		}
		c := &Call{Tool: req.Params.Name, Principal: opts.principal(ctx, req), Key: key, Arguments: args}
		res, err := run(ctx, idem.Request{Principal: c.Principal, Key: key, Operation: c.Tool, Payload: args}, c)
		if err != nil {
			return errorResult(opts, top.Context, err), nil
		}
		return successResult(res.Response, &res.Replayed, top.Context), nil
	}
}

// keyOf validates the raw idempotency_key argument.
func keyOf(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", idem.ValidateKey("")
	}
	var key string
	if err := json.Unmarshal(raw, &key); err != nil {
		return "", idem.NewError(idem.ErrInvalidKey, "idempotency_key must be a string")
	}
	if err := idem.ValidateKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// encodeBody encodes a handler's value as the stored body: a JSON object
// without the envelope fields this package adds per answer. Its failures
// match [idem.ErrUnencodable].
func encodeBody[Out any](v Out) (json.RawMessage, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("adcpmcp: encoding the handler's answer: %w: %w", idem.ErrUnencodable, err)
	}
	if len(body) < 2 || body[0] != '{' {
		return nil, fmt.Errorf("adcpmcp: the handler's answer is not a JSON object: %w", idem.ErrUnencodable)
	}
	if !bytes.Contains(body, []byte(`"context"`)) && !bytes.Contains(body, []byte(`"replayed"`)) {
		return body, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("adcpmcp: %w: %w", idem.ErrUnencodable, err)
	}
	delete(fields, "context")
	delete(fields, "replayed")
	return json.Marshal(fields)
}

// successResult answers with body at the root of structuredContent, plus
// replayed (when set) and the request's context.
func successResult(body json.RawMessage, replayed *bool, reqContext json.RawMessage) *mcp.CallToolResult {
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
		out = fmt.Appendf(out, "%t", *replayed)
	}
	if len(reqContext) > 0 {
		sep()
		out = append(out, `"context":`...)
		out = append(out, reqContext...)
	}
	out = append(out, '}')
	return &mcp.CallToolResult{
		Content:           []mcp.Content{&mcp.TextContent{Text: string(out)}},
		StructuredContent: json.RawMessage(out),
	}
}

// errorResult answers with {adcp_error, context} and isError.
func errorResult(opts *Options, reqContext json.RawMessage, err error) *mcp.CallToolResult {
	var wire any
	var ae *Error
	var ie *idem.Error
	switch {
	case errors.As(err, &ae):
		wire = ae
	case errors.As(err, &ie):
		wire = idem.Wire(err)
		if errors.Is(err, idem.ErrStorage) {
			opts.logger().Error("adcpmcp: idempotency storage failed", "error", err)
		}
	default:
		opts.logger().Error("adcpmcp: handler failed", "error", err)
		wire = idem.Wire(err) // SERVICE_UNAVAILABLE, no details
	}
	body := map[string]any{"adcp_error": wire}
	if len(reqContext) > 0 {
		body["context"] = reqContext
	}
	out, _ := json.Marshal(body)
	return &mcp.CallToolResult{
		IsError:           true,
		Content:           []mcp.Content{&mcp.TextContent{Text: string(out)}},
		StructuredContent: json.RawMessage(out),
	}
}

// AddTool registers t on s with h. The input schema defaults to any JSON
// object; if it lists idempotency_key as required, AddTool drops it from the
// list, so that a call without the key reaches h and gets AdCP's
// INVALID_REQUEST rather than a protocol error.
func AddTool(s *mcp.Server, t *mcp.Tool, h mcp.ToolHandler) {
	t.InputSchema = relaxSchema(t.InputSchema)
	s.AddTool(t, h)
}

func relaxSchema(schema any) any {
	if schema == nil {
		return json.RawMessage(`{"type":"object"}`)
	}
	raw, err := json.Marshal(schema)
	if err != nil {
		panic(fmt.Sprintf("adcpmcp: input schema does not encode: %v", err))
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		panic(fmt.Sprintf("adcpmcp: input schema is not an object: %v", err))
	}
	if req, ok := m["required"].([]any); ok {
		m["required"] = slices.DeleteFunc(req, func(v any) bool { return v == "idempotency_key" })
	}
	return m
}

// AcceptJSON is middleware for the streamable HTTP handler: it completes the
// Accept header of POST requests that accept only application/json (as the
// AdCP runner's raw probes do) so that, with JSONResponse set, they get a
// JSON answer instead of HTTP 400.
func AcceptJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			accept := r.Header.Get("Accept")
			if !strings.Contains(accept, "text/event-stream") || !strings.Contains(accept, "application/json") {
				r.Header.Set("Accept", "application/json, text/event-stream")
			}
		}
		next.ServeHTTP(w, r)
	})
}
