package httpsig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
)

// Capability is a verifier's request_signing capability block, as
// advertised on get_adcp_capabilities.
type Capability struct {
	// Supported: signatures are validated when present.
	Supported bool `json:"supported"`
	// CoversContentDigest is "required" in 3.2; "either" and "forbidden"
	// are legacy 3.0/3.1 postures.
	CoversContentDigest DigestPolicy `json:"covers_content_digest,omitempty"`
	// RequiredFor, WarnFor and SupportedFor list AdCP operation names.
	RequiredFor  []string `json:"required_for,omitempty"`
	WarnFor      []string `json:"warn_for,omitempty"`
	SupportedFor []string `json:"supported_for,omitempty"`
	// The ProtocolMethods* lists name JSON-RPC methods such as
	// "tasks/cancel", matched against the envelope's method.
	ProtocolMethodsRequiredFor  []string `json:"protocol_methods_required_for,omitempty"`
	ProtocolMethodsWarnFor      []string `json:"protocol_methods_warn_for,omitempty"`
	ProtocolMethodsSupportedFor []string `json:"protocol_methods_supported_for,omitempty"`
}

// Validate rejects capability blocks that break the namespace split (AdCP
// operation names never contain "/", JSON-RPC method names always do) or
// advertise a legacy digest policy for a 3.2 profile.
func (c Capability) Validate(p Profile) error {
	for _, l := range [][]string{c.RequiredFor, c.WarnFor, c.SupportedFor} {
		for _, op := range l {
			if op == "" || strings.Contains(op, "/") {
				return fmt.Errorf("httpsig: %q is not an AdCP operation name", op)
			}
		}
	}
	for _, l := range [][]string{c.ProtocolMethodsRequiredFor, c.ProtocolMethodsWarnFor, c.ProtocolMethodsSupportedFor} {
		for _, m := range l {
			if !strings.Contains(m, "/") {
				return fmt.Errorf("httpsig: %q is not a JSON-RPC protocol method", m)
			}
		}
	}
	if !c.CoversContentDigest.valid() {
		return fmt.Errorf("httpsig: invalid covers_content_digest %q", c.CoversContentDigest)
	}
	if p == ProfileRequest && c.CoversContentDigest != "" && c.CoversContentDigest != DigestRequired {
		return errors.New(`httpsig: AdCP 3.2 request signing requires covers_content_digest "required"`)
	}
	return nil
}

// Operation identifies what an inbound request invokes, established from
// the request before dispatch.
type Operation struct {
	// Name is the AdCP operation (e.g. "create_media_buy"); for MCP it is
	// the tools/call params.name.
	Name string
	// Method is the JSON-RPC envelope method ("tools/call",
	// "tasks/cancel", ...), or "" when the request is not JSON-RPC.
	Method string
}

// RequestOperation is the Operation an inbound request invokes, read from
// its raw body before dispatch: for a JSON-RPC body the envelope's method,
// and for an MCP tools/call also the tool name in params.name; for any
// other body the last segment of the URL path (per-operation endpoints).
// An A2A message/send names its skill inside the message, which A2A
// servers resolve themselves.
func RequestOperation(r *http.Request, body []byte) Operation {
	var env struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		Params  struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &env) == nil && env.JSONRPC != "" {
		op := Operation{Method: env.Method}
		if env.Method == "tools/call" {
			op.Name = env.Params.Name
		}
		return op
	}
	return Operation{Name: path.Base(r.URL.Path)}
}

// Mode is how strongly an operation asks for a signature.
type Mode int

const (
	// ModeOptional: signatures are verified when present but not required
	// (supported_for, or not listed at all).
	ModeOptional Mode = iota
	// ModeWarn: shadow mode (warn_for); failures are recorded and the
	// request continues only under independent authentication.
	ModeWarn
	// ModeRequired: unauthenticated unsigned requests are rejected
	// (required_for).
	ModeRequired
)

// String returns "optional", "warn" or "required".
func (m Mode) String() string {
	switch m {
	case ModeWarn:
		return "warn"
	case ModeRequired:
		return "required"
	}
	return "optional"
}

// ModeFor returns the mode for op, with precedence required > warn >
// supported. A JSON-RPC method other than tools/call is matched only
// against the protocol_methods_* lists; anything else only against the
// operation lists, so neither namespace can satisfy the other.
func (c Capability) ModeFor(op Operation) Mode {
	req, warn := c.RequiredFor, c.WarnFor
	name := op.Name
	if op.Method != "" && op.Method != "tools/call" {
		req, warn = c.ProtocolMethodsRequiredFor, c.ProtocolMethodsWarnFor
		name = op.Method
	}
	switch {
	case slices.Contains(req, name):
		return ModeRequired
	case slices.Contains(warn, name):
		return ModeWarn
	}
	return ModeOptional
}

// Requirement is the signature posture of one inbound request, composed
// with the verifier's other authenticators.
type Requirement struct {
	// Mode comes from Capability.ModeFor.
	Mode Mode
	// Mandatory requires a signature whatever Mode and fallback
	// credentials say, e.g. for a request that registers a webhook with
	// an authentication block on a signing-capable seller (see
	// CarriesWebhookAuthentication).
	Mandatory bool
	// FallbackAuthenticated reports that an independent authenticator
	// accepted the caller (a valid bearer token, API key or mTLS
	// identity).
	FallbackAuthenticated bool
}

// Action is the outcome of Requirement.Decide.
type Action int

const (
	// ActionReject: answer 401 with the signature error code.
	ActionReject Action = iota
	// ActionAccept: the request is authenticated.
	ActionAccept
	// ActionAcceptWithWarning: authenticated by the fallback credential
	// only; record the signature failure.
	ActionAcceptWithWarning
	// ActionRejectUnauthenticated: no credential was established; reject
	// as unauthenticated unless the operation admits anonymous callers.
	ActionRejectUnauthenticated
)

// String returns the action's snake_case name.
func (a Action) String() string {
	switch a {
	case ActionAccept:
		return "accept"
	case ActionAcceptWithWarning:
		return "accept_with_warning"
	case ActionRejectUnauthenticated:
		return "reject_unauthenticated"
	}
	return "reject"
}

// Source is what authenticated a request.
type Source int

const (
	// SourceNone: nothing did.
	SourceNone Source = iota
	// SourceSignature: the verified signature; the signer's identity is
	// established.
	SourceSignature
	// SourceFallback: a bearer token, API key or mTLS identity; no signer
	// identity is established.
	SourceFallback
)

// String returns "", "signature" or "fallback".
func (s Source) String() string {
	switch s {
	case SourceSignature:
		return "signature"
	case SourceFallback:
		return "fallback"
	}
	return ""
}

// Decision is the composed authentication outcome for one request.
type Decision struct {
	// Action is what to do with the request.
	Action Action
	// Source is what authenticated it, if anything.
	Source Source
	// Err is the signature failure behind a rejection or warning. For
	// ActionReject it is an *Error unless a hook failed operationally.
	Err error
}

// VerifiedSigner reports whether the decision establishes the signer's
// identity.
func (d Decision) VerifiedSigner() bool { return d.Source == SourceSignature }

// Decide composes the result of Verifier.Verify (nil, ErrUnsigned, or a
// failure) with the requirement:
//
//   - a verified signature authenticates the request;
//   - an unsigned request is rejected with request_signature_required
//     when Mandatory, or when Mode is ModeRequired and no fallback
//     credential is valid; otherwise the fallback credential, if any,
//     authenticates it;
//   - a malformed signature header pair always rejects, fallback or not;
//   - any other failure rejects, except in ModeWarn where a valid
//     fallback credential accepts with a warning (and no signer
//     identity).
func (q Requirement) Decide(verifyErr error) Decision {
	switch {
	case verifyErr == nil:
		return Decision{Action: ActionAccept, Source: SourceSignature}
	case errors.Is(verifyErr, ErrUnsigned):
		if q.Mandatory || (q.Mode == ModeRequired && !q.FallbackAuthenticated) {
			return Decision{Action: ActionReject, Err: ProfileRequest.fail(ErrSignatureRequired, "0", nil)}
		}
		if q.FallbackAuthenticated {
			return Decision{Action: ActionAccept, Source: SourceFallback}
		}
		return Decision{Action: ActionRejectUnauthenticated}
	case errors.Is(verifyErr, ErrHeaderMalformed):
		return Decision{Action: ActionReject, Err: verifyErr}
	}
	var e *Error
	if q.Mode == ModeWarn && errors.As(verifyErr, &e) {
		if q.FallbackAuthenticated {
			return Decision{Action: ActionAcceptWithWarning, Source: SourceFallback, Err: verifyErr}
		}
		return Decision{Action: ActionRejectUnauthenticated, Err: verifyErr}
	}
	return Decision{Action: ActionReject, Err: verifyErr}
}

// CarriesWebhookAuthentication reports whether a JSON request body
// registers a webhook with a legacy authentication block — a non-null
// "authentication" member inside any "push_notification_config" object or
// any element of a "notification_configs" array, at any depth (so MCP and
// A2A envelopes are covered). A seller that supports request signing must
// then require the request to be signed (Requirement.Mandatory). Bodies
// that are not JSON report false.
func CarriesWebhookAuthentication(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return false
	}
	return walkForAuthentication(v)
}

func walkForAuthentication(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			switch k {
			case "push_notification_config":
				if hasAuthentication(child) {
					return true
				}
			case "notification_configs":
				if arr, ok := child.([]any); ok {
					for _, c := range arr {
						if hasAuthentication(c) {
							return true
						}
					}
				}
			}
			if walkForAuthentication(child) {
				return true
			}
		}
	case []any:
		for _, c := range v {
			if walkForAuthentication(c) {
				return true
			}
		}
	}
	return false
}

func hasAuthentication(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	a, ok := m["authentication"]
	return ok && a != nil
}
