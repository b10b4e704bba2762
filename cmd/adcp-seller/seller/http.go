package seller

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/idem"
)

// RequestIDHeader is the header a request id arrives in and is echoed in.
const RequestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds an incoming request id; a longer one is replaced.
const maxRequestIDLen = 128

// requestInfo is what the access log line of one HTTP request says. The
// HTTP middleware puts it in the request's context; the MCP middleware and
// the idem Observer fill it in as the request goes. It holds nothing a
// caller sent but the request id and the tool name, both checked.
type requestInfo struct {
	id string

	mu        sync.Mutex
	principal string
	method    string       // the MCP method: tools/call, initialize, ...
	a2aMethod string       // the A2A JSON-RPC method: message/send, tasks/get, ...
	tool      string       // the tool of tools/call, the skill of message/send
	outcome   idem.Outcome // of the idempotent call, if one ran
	adcpError string       // adcp_error.code of an error answer
}

type requestInfoKey struct{}

func requestInfoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return info
}

// logRequests gives each request an id (a sane incoming X-Request-Id, or a
// new one), echoes it in the response, and logs one line per request when
// it is answered: method, path (never the query), status, bytes, duration,
// and the principal, MCP or A2A method, tool, idempotency outcome and AdCP
// error code when known. Never a token, key, payload or webhook URL. Probes
// (/healthz, /readyz) that succeed log at debug level.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{id: requestID(r.Header.Get(RequestIDHeader))}
		w.Header().Set(RequestIDHeader, info.id)
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info)))

		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		level := slog.LevelInfo
		if (r.URL.Path == "/healthz" || r.URL.Path == "/readyz") && status == http.StatusOK {
			level = slog.LevelDebug
		}
		if !log.Enabled(r.Context(), level) {
			return
		}
		attrs := make([]slog.Attr, 0, 12)
		attrs = append(attrs,
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Int64("bytes", rec.bytes),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
		)
		info.mu.Lock()
		for _, a := range [...]struct{ k, v string }{
			{"principal", info.principal}, {"mcp_method", info.method}, {"a2a_method", info.a2aMethod}, {"tool", info.tool},
			{"idempotency", string(info.outcome)}, {"adcp_error", info.adcpError},
		} {
			if a.v != "" {
				attrs = append(attrs, slog.String(a.k, a.v))
			}
		}
		info.mu.Unlock()
		attrs = append(attrs, slog.String("request_id", info.id))
		log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

// requestID returns the incoming id when it is sane (1 to 128 characters
// of A-Z a-z 0-9 . _ : -), otherwise a new random one.
func requestID(in string) string {
	if in != "" && len(in) <= maxRequestIDLen && isName(in, "._:-") {
		return in
	}
	return rand.Text()
}

// isName reports whether s has only ASCII letters, digits and the bytes
// of extra.
func isName(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte(extra, c) >= 0:
		default:
			return false
		}
	}
	return true
}

// statusRecorder notes the status and size of a response.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the writer's Flush and
// deadlines (the MCP SDK streams through it).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush implements http.Flusher for handlers that assert it.
func (r *statusRecorder) Flush() {
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// maxToolNameLen bounds the tool name the access log repeats.
const maxToolNameLen = 64

// noteMCP is MCP server middleware that notes, for the access log, the
// principal, the MCP method, the tool called and the AdCP error code of an
// error answer.
func noteMCP(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		info := requestInfoFrom(ctx)
		if info == nil {
			return next(ctx, method, req)
		}
		info.mu.Lock()
		info.method = method
		if extra := req.GetExtra(); extra != nil && extra.TokenInfo != nil {
			info.principal = extra.TokenInfo.UserID
		}
		if call, ok := req.(*mcp.CallToolRequest); ok && call.Params != nil {
			info.tool = "(invalid)" // the caller chose it: logged only if it is a plain name
			if name := call.Params.Name; len(name) <= maxToolNameLen && isName(name, "_-") {
				info.tool = name
			}
		}
		info.mu.Unlock()
		res, err := next(ctx, method, req)
		if r, ok := res.(*mcp.CallToolResult); ok && r.IsError {
			if code := adcpErrorCode(r.StructuredContent); code != "" {
				info.mu.Lock()
				info.adcpError = code
				info.mu.Unlock()
			}
		}
		return res, err
	}
}

// adcpErrorCode returns adcp_error.code of an error answer's
// structuredContent, or "" if it has none (or one that is not an
// upper-case name).
func adcpErrorCode(content any) string {
	raw, ok := content.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(content); err != nil {
			return ""
		}
	}
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"adcp_error"`
	}
	if json.Unmarshal(raw, &body) != nil || len(body.Error.Code) > maxToolNameLen || !isName(body.Error.Code, "_") {
		return ""
	}
	return body.Error.Code
}

// noteOutcome is an idem.Observer that notes the outcome of the idempotent
// call for the access log.
var noteOutcome = idem.ObserverFunc(func(ctx context.Context, o idem.Observation) {
	if info := requestInfoFrom(ctx); info != nil {
		info.mu.Lock()
		info.outcome = o.Outcome
		info.mu.Unlock()
	}
})
