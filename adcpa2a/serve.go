package adcpa2a

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/a2aproject/a2a-go/a2asrv"

	"github.com/adcp-go/idempotency/adcp"
)

// JSON-RPC error codes (JSON-RPC 2.0 and A2A 0.3).
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeInvalidParams  = -32602
	codeServerError    = -32000
	codeUnsupported    = -32004
)

// maxParts bounds the parts of an invocation message (the profile asks to
// bound them before parsing; a valid invocation has one DataPart and maybe
// a TextPart or two).
const maxParts = 16

// The headers that activate A2A extensions: A2A 0.3's and A2A 1.0's.
var extensionHeaders = []string{a2asrv.ExtensionsMetaKey, "A2A-Extensions"}

// rpcError is an answer given before a2asrv sees the request.
type rpcError struct {
	status  int // HTTP status
	code    int // JSON-RPC error code
	adcpErr adcp.Error
}

func invalid(code int, field, format string, args ...any) *rpcError {
	return &rpcError{status: http.StatusOK, code: code, adcpErr: adcp.Error{
		Code: "INVALID_REQUEST", Message: fmt.Sprintf(format, args...), Recovery: "correctable", Field: field,
	}}
}

// invocation is a decoded, valid message/send: the skill and its arguments
// as sent.
type invocation struct {
	skill string
	run   adcp.Runner
	input json.RawMessage
}

// ServeHTTP implements http.Handler; see [NewHandler].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, AgentCardPath) {
		h.card.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "A2A JSON-RPC takes POST requests", http.StatusMethodNotAllowed)
		return
	}
	activated := extensionActivated(r.Header)
	if activated { // confirm the activation, in the header that asked for it
		for _, name := range extensionHeaders {
			if r.Header.Get(name) != "" {
				w.Header().Set(name, ExtensionURI)
			}
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			e := invalid(codeInvalidRequest, "", "the request body exceeds %d bytes", h.maxBody)
			e.status = http.StatusRequestEntityTooLarge
			writeError(w, nil, e)
			return
		}
		writeError(w, nil, invalid(codeParseError, "", "the request body could not be read"))
		return
	}
	req, rerr := parseEnvelope(body)
	if rerr != nil {
		writeError(w, req.id(), rerr)
		return
	}
	principal := h.principal(r)
	if principal == "" {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, req.id(), &rpcError{status: http.StatusUnauthorized, code: codeServerError, adcpErr: adcp.Error{
			Code: "AUTH_REQUIRED", Message: "the request has no authenticated principal", Recovery: "correctable",
		}})
		return
	}
	ctx := withCallContext(r, principal)
	switch req.Method {
	case "message/send":
		inv, rerr := h.parseInvocation(req.Params, activated)
		if rerr != nil {
			writeError(w, req.id(), rerr)
			return
		}
		ctx = context.WithValue(ctx, invocationKey, inv)
	case "message/stream", "tasks/resubscribe":
		writeError(w, req.id(), &rpcError{status: http.StatusOK, code: codeUnsupported, adcpErr: adcp.Error{
			Code: "UNSUPPORTED_FEATURE", Message: "this agent does not stream; use message/send", Recovery: "correctable",
		}})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	r = r.WithContext(ctx)
	r.Body = io.NopCloser(bytes.NewReader(body))
	h.rpc.ServeHTTP(w, r)
}

// withCallContext returns r's context with the principal, and an
// a2asrv.CallContext carrying the request headers (a2asrv.ExtensionsFrom
// reads them) and the principal as its user.
func withCallContext(r *http.Request, principal string) context.Context {
	prev, hasPrev := a2asrv.CallContextFrom(r.Context())
	ctx, call := a2asrv.WithCallContext(context.WithValue(r.Context(), principalKey, principal), a2asrv.NewRequestMeta(r.Header))
	if hasPrev && prev.User != nil && prev.User.Authenticated() && prev.User.Name() == principal {
		call.User = prev.User
	} else {
		call.User = &a2asrv.AuthenticatedUser{UserName: principal}
	}
	return ctx
}

// extensionActivated reports whether the request activates the AdCP
// profile: ExtensionURI in a comma-separated extensions header.
func extensionActivated(header http.Header) bool {
	for _, name := range extensionHeaders {
		for _, v := range header.Values(name) {
			for uri := range strings.SplitSeq(v, ",") {
				if strings.TrimSpace(uri) == ExtensionURI {
					return true
				}
			}
		}
	}
	return false
}

// envelope is a JSON-RPC request, decoded as a2asrv decodes it.
type envelope struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	ID      json.RawMessage `json:"id"`
}

// id is the request id to answer with: the one sent if it is valid, else
// null.
func (e *envelope) id() json.RawMessage {
	if e == nil || !validID(e.ID) {
		return nil
	}
	return e.ID
}

func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true // absent: answered with null
	}
	switch id[0] {
	case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return true
	}
	return false
}

// parseEnvelope decodes a JSON-RPC 2.0 request. The returned envelope is
// usable (for its id) even with an error, unless the body is not JSON.
func parseEnvelope(body []byte) (*envelope, *rpcError) {
	var e envelope
	if err := json.Unmarshal(body, &e); err != nil {
		var probe any
		if json.Unmarshal(body, &probe) != nil {
			return nil, invalid(codeParseError, "", "the request is not valid JSON")
		}
		return nil, invalid(codeInvalidRequest, "", "the request is not a JSON-RPC 2.0 request object")
	}
	switch {
	case e.JSONRPC != "2.0":
		return &e, invalid(codeInvalidRequest, "", "the request must say \"jsonrpc\": \"2.0\"")
	case e.Method == "":
		return &e, invalid(codeInvalidRequest, "", "the request names no method")
	case !validID(e.ID):
		return &e, invalid(codeInvalidRequest, "", "the request id must be a string, a number or null")
	}
	return &e, nil
}

// part is one message part, decoded as a2a.ContentParts decodes it.
type part struct {
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`
}

// Invoked reports what an A2A JSON-RPC request body invokes, decoded as
// the [Handler] decodes it before it runs anything: method is the
// JSON-RPC method ("" if body is not a JSON-RPC request object), and skill
// is, for a valid message/send, the skill its one invocation DataPart
// names. skill is "" for any other request and for any message/send the
// Handler refuses before it looks the skill up, so a skill the Handler
// runs is always the skill Invoked names: middleware that judges a
// request by its skill (a signing policy, a rate limit) judges what runs.
// The skill may still be refused afterwards (unknown, or its input
// malformed). Invoked does not read the request's headers; body is not
// retained.
func Invoked(body []byte) (method, skill string) {
	e, rerr := parseEnvelope(body)
	if e == nil {
		return "", ""
	}
	if rerr != nil || e.Method != "message/send" {
		return e.Method, ""
	}
	skill, _, _ = invokedSkill(e.Params)
	return e.Method, skill
}

// parseInvocation decodes and checks the invocation of a message/send: one
// DataPart {skill, input} (or {skill, parameters} unless the profile is
// activated), TextParts beside it, nothing else.
func (h *Handler) parseInvocation(params json.RawMessage, activated bool) (*invocation, *rpcError) {
	skill, members, rerr := invokedSkill(params)
	if rerr != nil {
		return nil, rerr
	}
	run := h.skills[skill]
	if run == nil {
		return nil, invalid(codeInvalidParams, "skill", "this agent has no skill with that id; its agent card lists them")
	}
	input, hasInput := members["input"]
	params2, hasParams := members["parameters"]
	switch {
	case hasInput && hasParams:
		return nil, invalid(codeInvalidParams, "input", "the DataPart carries both input and parameters; send the arguments once, in input")
	case hasParams && activated:
		return nil, invalid(codeInvalidParams, "input", "with the AdCP extension activated the arguments go in input; parameters is not an alias in the profile")
	case hasParams:
		input = params2
	case !hasInput:
		return nil, invalid(codeInvalidParams, "input", "the DataPart needs input: the task's arguments as an object")
	}
	if input = bytes.TrimSpace(input); len(input) == 0 || input[0] != '{' {
		return nil, invalid(codeInvalidParams, "input", "input must be a JSON object: the task's arguments")
	}
	return &invocation{skill: skill, run: run, input: input}, nil
}

// invokedSkill decodes the params of a message/send up to the skill: the
// message's parts (one DataPart, TextParts beside it, nothing else), the
// DataPart's data (an object with skill, input and parameters at most, each
// once) and its non-empty skill. It returns the skill and the data's
// members, or the error the Handler answers. Both [Invoked] and
// parseInvocation go through it, so they agree on every body.
func invokedSkill(params json.RawMessage) (skill string, members map[string]json.RawMessage, rerr *rpcError) {
	var p struct {
		Message *struct {
			Parts []json.RawMessage `json:"parts"`
		} `json:"message"`
	}
	if err := json.Unmarshal(params, &p); err != nil || p.Message == nil {
		return "", nil, invalid(codeInvalidParams, "", "message/send needs params with a message object")
	}
	if len(p.Message.Parts) > maxParts {
		return "", nil, invalid(codeInvalidParams, "", "the message has more than %d parts", maxParts)
	}
	var data json.RawMessage
	dataParts := 0
	for i, raw := range p.Message.Parts {
		var pt part
		if err := json.Unmarshal(raw, &pt); err != nil {
			return "", nil, invalid(codeInvalidParams, "", "message part %d is not a part object", i)
		}
		switch pt.Kind {
		case "text":
		case "data":
			dataParts++
			data = pt.Data
		case "file":
			return "", nil, invalid(codeInvalidParams, "", "message part %d is a file part; an AdCP invocation carries one DataPart and no files", i)
		default:
			return "", nil, invalid(codeInvalidParams, "", "message part %d is not a text, data or file part", i)
		}
	}
	switch dataParts {
	case 0:
		return "", nil, invalid(codeInvalidParams, "", "the message carries no DataPart; an AdCP invocation is one DataPart {\"skill\": ..., \"input\": {...}}")
	case 1:
	default:
		return "", nil, invalid(codeInvalidParams, "", "the message carries %d DataParts; an AdCP invocation is exactly one", dataParts)
	}

	members, ok := objectMembers(data)
	if !ok {
		return "", nil, invalid(codeInvalidParams, "", "the DataPart's data must be an object {\"skill\": ..., \"input\": {...}} with each member once")
	}
	for name := range members {
		if name != "skill" && name != "input" && name != "parameters" {
			return "", nil, invalid(codeInvalidParams, "", "the DataPart's data may hold only skill and input")
		}
	}
	if err := json.Unmarshal(members["skill"], &skill); err != nil || skill == "" {
		return "", nil, invalid(codeInvalidParams, "skill", "the DataPart needs skill: a non-empty string naming the AdCP task")
	}
	return skill, members, nil
}

// objectMembers returns the members of the JSON object in data, by their
// exact names, or false if data is not an object or names a member twice.
func objectMembers(data json.RawMessage) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	members := make(map[string]json.RawMessage, 2)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if _, dup := members[name]; dup {
			return nil, false
		}
		members[name] = v
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, false
	}
	return members, true
}

// writeError answers with a JSON-RPC error whose data holds the message
// (as "error", which A2A clients show) and the AdCP error.
func writeError(w http.ResponseWriter, id json.RawMessage, e *rpcError) {
	if id == nil {
		id = json.RawMessage("null")
	}
	resp := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct {
				Error     string     `json:"error"`
				AdCPError adcp.Error `json:"adcp_error"`
			} `json:"data"`
		} `json:"error"`
	}{JSONRPC: "2.0", ID: id}
	resp.Error.Code = e.code
	resp.Error.Message = e.adcpErr.Message
	resp.Error.Data.Error = e.adcpErr.Message
	resp.Error.Data.AdCPError = e.adcpErr
	out, _ := json.Marshal(resp)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_, _ = w.Write(out)
}
