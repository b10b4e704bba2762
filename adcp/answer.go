package adcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/adcp-go/idempotency/idem"
)

// envelopeFields are the members the answer adds per request; a handler's
// value never stores them.
var envelopeFields = []string{"context", "replayed", "adcp_version"}

// EncodeBody encodes a handler's value as the stored body: a JSON object
// without the envelope fields added per answer (context, replayed,
// adcp_version). A status the handler sets (submitted, for work that
// continues) is kept: a replay returns it as it was. Its failures match
// idem.ErrUnencodable.
func EncodeBody(v any) (json.RawMessage, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("adcp: encoding the handler's answer: %w: %w", idem.ErrUnencodable, err)
	}
	if len(body) < 2 || body[0] != '{' {
		return nil, fmt.Errorf("adcp: the handler's answer is not a JSON object: %w", idem.ErrUnencodable)
	}
	found := false
	for _, f := range envelopeFields {
		found = found || bytes.Contains(body, []byte(`"`+f+`"`))
	}
	if !found {
		return body, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("adcp: %w: %w", idem.ErrUnencodable, err)
	}
	for _, f := range envelopeFields {
		delete(fields, f)
	}
	return json.Marshal(fields)
}

// SuccessAnswer answers with body at the root, plus the envelope's status
// (completed, unless the body sets its own: AdCP 3.0 requires status on every
// response too), replayed (when set), the request's context (when sent) and,
// for AdCP 3.1 and later, adcp_version.
func SuccessAnswer(v Version, body json.RawMessage, replayed *bool, reqContext json.RawMessage) Answer {
	out := make([]byte, 0, len(body)+len(reqContext)+64)
	out = append(out, body[:len(body)-1]...)
	sep := func() {
		if len(out) > 1 {
			out = append(out, ',')
		}
	}
	if !bytes.Contains(body, []byte(`"status"`)) || !hasMember(body, "status") {
		sep()
		out = append(out, `"status":"completed"`...)
	}
	if v.AtLeast(V3_1) {
		sep()
		out = append(out, `"adcp_version":"`...)
		out = append(out, v.String()...)
		out = append(out, '"')
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

// ErrorAnswer answers with {adcp_error, status: failed, context} (and, for
// AdCP 3.1 and later, adcp_version). An [*Error] keeps
// its fields; an idem error is answered in its AdCP form (idem.Wire);
// anything else becomes SERVICE_UNAVAILABLE without details, and is logged
// (as are storage failures), never with keys or payloads.
// IDEMPOTENCY_CONFLICT carries code, message and, from AdCP 3.1 (whose
// example shows it), recovery: nothing else, so that key reuse reveals
// nothing of the stored request or answer.
func ErrorAnswer(opts *Options, v Version, reqContext json.RawMessage, err error) Answer {
	var wire any
	var ae *Error
	var ie *idem.Error
	switch {
	case errors.As(err, &ae):
		wire = ae
	case errors.As(err, &ie):
		w := idem.Wire(err)
		if w.Code == string(idem.CodeIdempotencyConflict) && !v.AtLeast(V3_1) {
			w.Recovery = "" // AdCP 3.0 allowed code and message only
		}
		wire = w
		if errors.Is(err, idem.ErrStorage) {
			opts.logger().Error("adcp: idempotency storage failed", "error", err)
		}
	default:
		opts.logger().Error("adcp: handler failed", "error", err)
		wire = idem.Wire(err) // SERVICE_UNAVAILABLE, no details
	}
	body := map[string]any{"adcp_error": wire, "status": "failed"}
	if v.AtLeast(V3_1) {
		body["adcp_version"] = v.String()
	}
	if len(reqContext) > 0 {
		body["context"] = reqContext
	}
	return Answer{Body: marshalVerbatim(body), IsError: true}
}

// marshalVerbatim encodes v without encoding/json's HTML escaping, so that
// the request's context is echoed byte for byte as SuccessAnswer echoes it
// (json.Marshal would turn a "&" the buyer sent into "\u0026"). v is a
// map of strings, RawMessages and wire errors: it always encodes.
func marshalVerbatim(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// HTTPStatus is the HTTP status for an AdCP error code, for transports that
// answer errors with an HTTP status (MCP and A2A answer errors inside a 200
// response instead): 400 for invalid requests, 401 without credentials, 409
// for idempotency conflicts and keys in flight, 422 for expired keys, 429
// when rate limited, 500 for seller-side misconfiguration, 503 otherwise.
func HTTPStatus(code string) int {
	switch code {
	case "INVALID_REQUEST", "VALIDATION_ERROR", "VERSION_UNSUPPORTED":
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
