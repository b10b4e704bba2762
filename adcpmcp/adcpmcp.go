// Package adcpmcp serves AdCP tasks over MCP with the official MCP Go SDK
// (github.com/modelcontextprotocol/go-sdk): it turns the transport-free
// runners of package adcp into mcp.ToolHandlers.
//
// [Mutating] (any idem backend through an idem.Guard) and [MutatingTx]
// (Postgres, inside idem.RunInTx) make a tool idempotent the way AdCP asks
// (see adcp.Mutating): idempotency_key validated first, requests compared
// by canonical hash, the success body at the root of structuredContent
// with replayed and the current request's context, every error a tool
// result with isError and structuredContent {adcp_error, context}.
// [Read] replays a read when the caller supplies a key; [ReadOnly] gives a
// tool outside the replay contract the same answer shapes.
//
// Register tools with [AddTool], which keeps idempotency_key out of the
// input schema's required list (otherwise the SDK would reject a call
// without it before the handler could answer INVALID_REQUEST), and serve
// them behind [AcceptJSON] so that a bare JSON-only tools/call gets a JSON
// answer.
package adcpmcp

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
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
	// AccountSalt scopes keys by (principal, account); see
	// adcp.Options.AccountSalt.
	AccountSalt []byte
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

func (o *Options) adcp() *adcp.Options {
	if o == nil {
		return nil
	}
	return &adcp.Options{Logger: o.Logger, AccountSalt: o.AccountSalt}
}

// Mutating returns the handler of a mutating tool whose work runs through g
// at most once per (principal, idempotency_key); see adcp.Mutating. h's
// value must encode as a JSON object: it becomes the body of
// structuredContent.
func Mutating[Out any](g *idem.Guard, opts *Options, h adcp.Handler[Out]) mcp.ToolHandler {
	return Handler(opts, adcp.Mutating(g, opts.adcp(), h))
}

// MutatingTx is [Mutating] for the Postgres store: h runs inside the
// transaction of idem.RunInTx on db, so its writes and the stored answer
// commit together.
func MutatingTx[Out any](s *idem.Store, db idem.DB, opts *Options, h adcp.TxHandler[Out]) mcp.ToolHandler {
	return Handler(opts, adcp.MutatingTx(s, db, opts.adcp(), h))
}

// Read returns the handler of a read tool (get_*, list_*, capability
// discovery): replayed through g when the caller supplies an
// idempotency_key, run as it is otherwise; see adcp.Read.
func Read[Out any](g *idem.Guard, opts *Options, h adcp.Handler[Out]) mcp.ToolHandler {
	return Handler(opts, adcp.Read(g, opts.adcp(), h))
}

// ReadOnly returns the handler of a tool outside the replay contract (a
// test controller): no idempotency key, but the same answer shapes.
func ReadOnly[Out any](opts *Options, h adcp.Handler[Out]) mcp.ToolHandler {
	return Handler(opts, adcp.ReadOnly(opts.adcp(), h))
}

// Handler serves an adcp.Runner as an MCP tool: the tool's name and
// arguments and the principal (see [Options]) make the task, and the answer
// is both the structuredContent and its text content.
func Handler(opts *Options, run adcp.Runner) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		a := run(ctx, adcp.Task{Tool: req.Params.Name, Principal: opts.principal(ctx, req), Arguments: req.Params.Arguments})
		return &mcp.CallToolResult{
			IsError:           a.IsError,
			Content:           []mcp.Content{&mcp.TextContent{Text: string(a.Body)}},
			StructuredContent: a.Body,
		}, nil
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
