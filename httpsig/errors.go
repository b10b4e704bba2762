package httpsig

import (
	"errors"
	"strconv"
)

// kind is a profile-independent failure class. Each exported Err* sentinel
// is a *kind; an *Error carries one and reports the profile's wire code.
type kind struct {
	request string // code under the request profiles
	webhook string // code under the webhook profile ("" if none)
	desc    string
}

func (k *kind) Error() string { return "httpsig: " + k.desc }

func sig(suffix, desc string) *kind {
	return &kind{
		request: "request_signature_" + suffix,
		webhook: "webhook_signature_" + suffix,
		desc:    desc,
	}
}

// Failure classes of the verifier checklists. Every *Error returned by
// Verifier.Verify matches exactly one of them with errors.Is, whatever the
// profile; Error.Code holds the profile's exact wire code.
//
// Hooks (KeySource, RevocationChecker, NonceStore) report their verdicts by
// returning (or wrapping) the matching sentinel.
var (
	// ErrHeaderMalformed: Signature or Signature-Input malformed, one
	// without the other, or a covered field malformed (step 1).
	ErrHeaderMalformed error = sig("header_malformed", "signature header malformed")
	// ErrParamsIncomplete: a required sig-param is absent (step 2).
	ErrParamsIncomplete error = sig("params_incomplete", "required signature parameter absent")
	// ErrTagInvalid: the tag sig-param is not the profile's tag (step 3).
	ErrTagInvalid error = sig("tag_invalid", "signature tag invalid")
	// ErrAlgNotAllowed: alg is not ed25519 or ecdsa-p256-sha256 (step 4).
	ErrAlgNotAllowed error = sig("alg_not_allowed", "signature algorithm not allowed")
	// ErrWindowInvalid: created/expires outside the permitted window
	// (step 5).
	ErrWindowInvalid error = sig("window_invalid", "signature validity window invalid")
	// ErrComponentsIncomplete: a required covered component is missing
	// (step 6).
	ErrComponentsIncomplete error = sig("components_incomplete", "required covered component missing")
	// ErrComponentsUnexpected: content-digest covered on a legacy endpoint
	// whose policy is "forbidden" (step 6).
	ErrComponentsUnexpected error = sig("components_unexpected", "covered component not permitted")
	// ErrKeyUnknown: keyid does not resolve to a key (step 7).
	ErrKeyUnknown error = sig("key_unknown", "signing key unknown")
	// ErrKeyPurposeInvalid: the JWK's use, key_ops, adcp_use or
	// alg/kty/crv do not allow this signature (step 8).
	ErrKeyPurposeInvalid error = sig("key_purpose_invalid", "signing key not valid for this purpose")
	// ErrKeyRevoked: keyid is on the revocation list (step 9).
	ErrKeyRevoked error = sig("key_revoked", "signing key revoked")
	// ErrRevocationStale: the revocation list was not refreshed within
	// grace (step 9).
	ErrRevocationStale error = sig("revocation_stale", "revocation list stale")
	// ErrRateAbuse: the per-keyid (or aggregate) replay-cache cap is
	// reached (steps 9a and 13).
	ErrRateAbuse error = sig("rate_abuse", "replay cache cap reached for signing key")
	// ErrSignatureInvalid: cryptographic verification failed (step 10).
	ErrSignatureInvalid error = sig("invalid", "signature does not verify")
	// ErrDigestMismatch: Content-Digest does not match the body (step 11).
	ErrDigestMismatch error = sig("digest_mismatch", "content-digest does not match body")
	// ErrReplayed: (keyid, nonce) already seen within its lifetime
	// (step 12).
	ErrReplayed error = sig("replayed", "signature nonce replayed")

	// ErrTargetURIMalformed: the target URI cannot be canonicalized, or
	// the canonical @authority differs from the target URI's authority
	// (step 10).
	ErrTargetURIMalformed error = &kind{
		request: "request_target_uri_malformed",
		webhook: "webhook_target_uri_malformed",
		desc:    "target URI malformed",
	}
	// ErrBodyMalformed: the JSON body has duplicate object keys or does not
	// parse (step 14). The signature itself was valid and the nonce burned.
	ErrBodyMalformed error = &kind{
		request: "request_body_malformed",
		webhook: "webhook_body_malformed",
		desc:    "body malformed",
	}
	// ErrSignatureRequired: an unsigned request where signing is required
	// (request profiles only; produced by Requirement.Decide).
	ErrSignatureRequired error = &kind{
		request: "request_signature_required",
		desc:    "signature required",
	}
)

// ErrUnsigned is returned by Verifier.Verify when the request carries
// neither Signature nor Signature-Input. It is not a verification failure:
// whether an unsigned request is acceptable is the caller's policy (see
// Requirement).
var ErrUnsigned = errors.New("httpsig: request is not signed")

// Error is a verification failure with its stable AdCP error code.
// Use errors.Is with the Err* sentinels for profile-independent handling,
// or errors.As to read Code.
type Error struct {
	// Code is the exact wire code, e.g. "webhook_signature_replayed" or
	// "request_target_uri_malformed".
	Code string
	// Step is the verifier-checklist step that failed ("1".."14", "9a",
	// or "0" for the pre-check).
	Step string
	// Err is the underlying cause, if any. It is for server-side logs;
	// the spec forbids echoing details beyond Code to the counterparty.
	Err error

	kind *kind
}

// Error implements error.
func (e *Error) Error() string {
	s := "httpsig: " + e.Code + " (step " + e.Step + ")"
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the failure class sentinel and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.Err}
}

// Challenge returns the WWW-Authenticate value a verifier sends with its 401
// response: Signature error="<code>", with no other parameters.
func (e *Error) Challenge() string {
	return `Signature error=` + strconv.Quote(e.Code)
}

// Code returns the wire code the profile uses for the failure class that
// err matches, or "" if err matches none (or the class has no code in the
// profile, as ErrSignatureRequired under ProfileWebhook).
func (p Profile) Code(err error) string {
	var k *kind
	if !errors.As(err, &k) {
		return ""
	}
	if p == ProfileWebhook {
		return k.webhook
	}
	return k.request
}

func (p Profile) fail(k error, step string, cause error) *Error {
	kk := k.(*kind)
	code := kk.request
	if p == ProfileWebhook {
		code = kk.webhook
	}
	return &Error{Code: code, Step: step, Err: cause, kind: kk}
}

// failFrom converts a hook error into an *Error when it matches a failure
// class, choosing def when it matches none but the caller knows the class.
// It returns nil when err matches no class and def is nil.
func (p Profile) failFrom(err error, step string, def error) *Error {
	var k *kind
	if errors.As(err, &k) {
		if err == error(k) {
			return p.fail(k, step, nil)
		}
		return p.fail(k, step, err)
	}
	if def != nil {
		return p.fail(def, step, err)
	}
	return nil
}
