package httpsig

import (
	"fmt"
	"time"
)

// Profile selects one of the AdCP RFC 9421 signing profiles. The profile is
// trusted endpoint configuration: a verifier never infers it from the
// request, and never falls back from one profile's parser to another's.
type Profile int

const (
	// ProfileWebhook is the webhook-callback profile
	// (tag "adcp/webhook-signing/v1"): the seller signs, the buyer
	// verifies. Content-digest coverage is always required. The Signature
	// value uses the webhook-v1 legacy encoding (unpadded Base64URL).
	ProfileWebhook Profile = iota + 1

	// ProfileRequest is the AdCP 3.2 transport request-signing profile
	// (tag "adcp/request-signing/v1"). Binary values are RFC 8941
	// sf-binary (standard, padded Base64) and every signed request with a
	// body must cover content-digest.
	ProfileRequest

	// ProfileRequestLegacy is the AdCP 3.0/3.1 request-signing profile, for
	// explicitly configured compatibility endpoints only. It shares the tag
	// with ProfileRequest but encodes Signature and Content-Digest as
	// unpadded Base64URL, and applies the endpoint's legacy
	// covers_content_digest policy (see DigestPolicy).
	ProfileRequestLegacy
)

// Tags, algorithms and limits defined by the AdCP profile.
const (
	// TagWebhook is the required tag sig-param of ProfileWebhook.
	TagWebhook = "adcp/webhook-signing/v1"
	// TagRequest is the required tag sig-param of the request profiles.
	TagRequest = "adcp/request-signing/v1"

	// AlgEd25519 is the RFC 9421 name of Ed25519 (JWK alg "EdDSA").
	AlgEd25519 = "ed25519"
	// AlgECDSAP256SHA256 is the RFC 9421 name of ECDSA P-256 with SHA-256
	// (JWK alg "ES256"); signatures are IEEE P1363 r||s, 64 bytes.
	AlgECDSAP256SHA256 = "ecdsa-p256-sha256"

	// DefaultLabel is the signature label signers emit and verifiers
	// process; other labels in the same headers are ignored.
	DefaultLabel = "sig1"

	// MaxValidity is the longest permitted expires − created window.
	MaxValidity = 300 * time.Second
	// ClockSkew is the tolerance applied to created and expires, and added
	// to the lifetime of replay-cache entries.
	ClockSkew = 60 * time.Second

	// MinNonceBytes is the minimum decoded length of the nonce sig-param.
	MinNonceBytes = 16
)

// JWK member values used by AdCP signing keys.
const (
	// AdCPUseRequestSigning is the adcp_use of keys that sign requests and
	// (since AdCP 3.2) webhooks.
	AdCPUseRequestSigning = "request-signing"
	// AdCPUseWebhookSigning is the deprecated adcp_use still accepted on
	// the webhook path for backward compatibility.
	AdCPUseWebhookSigning = "webhook-signing"
)

// DigestPolicy is a verifier's covers_content_digest capability value.
type DigestPolicy string

const (
	// DigestRequired rejects body-bearing signed requests that do not cover
	// content-digest. It is the only AdCP 3.2 value, and the zero value of
	// DigestPolicy means the same.
	DigestRequired DigestPolicy = "required"
	// DigestEither accepts signatures with or without content-digest
	// coverage (AdCP 3.0/3.1 compatibility endpoints only).
	DigestEither DigestPolicy = "either"
	// DigestForbidden rejects signatures that cover content-digest (AdCP
	// 3.0/3.1 compatibility endpoints behind body-rewriting infrastructure).
	DigestForbidden DigestPolicy = "forbidden"
)

func (d DigestPolicy) valid() bool {
	switch d {
	case "", DigestRequired, DigestEither, DigestForbidden:
		return true
	}
	return false
}

// String returns the profile's name.
func (p Profile) String() string {
	switch p {
	case ProfileWebhook:
		return "webhook"
	case ProfileRequest:
		return "request"
	case ProfileRequestLegacy:
		return "request-legacy"
	}
	return fmt.Sprintf("Profile(%d)", int(p))
}

// Tag returns the tag sig-param the profile requires.
func (p Profile) Tag() string {
	if p == ProfileWebhook {
		return TagWebhook
	}
	return TagRequest
}

func (p Profile) valid() bool {
	return p >= ProfileWebhook && p <= ProfileRequestLegacy
}

// Binary value encodings of the Signature and Content-Digest fields.
type binaryMode int

const (
	binStd    binaryMode = iota // RFC 8941 sf-binary: standard alphabet, padded
	binURL                      // legacy: Base64URL alphabet, unpadded
	binEither                   // either of the above, never mixed
)

// signatureEncoding is how the profile encodes the Signature value.
func (p Profile) signatureEncoding() binaryMode {
	if p == ProfileRequest {
		return binStd
	}
	return binURL
}

// digestEncoding is how a signer of the profile encodes Content-Digest.
// The webhook conformance vectors carry RFC 8941 padded Base64 in
// Content-Digest, the 3.1 request vectors carry unpadded Base64URL.
func (p Profile) digestEncoding() binaryMode {
	if p == ProfileRequestLegacy {
		return binURL
	}
	return binStd
}

// digestDecoding is what a verifier of the profile accepts in
// Content-Digest. Legacy routes accept either unmixed alphabet because the
// published legacy vectors use both; the 3.2 request profile is strict.
func (p Profile) digestDecoding() binaryMode {
	if p == ProfileRequest {
		return binStd
	}
	return binEither
}

// allowsKeyUse reports whether a JWK adcp_use value may verify signatures of
// the profile.
func (p Profile) allowsKeyUse(use string) bool {
	if use == AdCPUseRequestSigning {
		return true
	}
	return p == ProfileWebhook && use == AdCPUseWebhookSigning
}

// defaultNonceCap is the recommended per-keyid replay-cache cap.
func (p Profile) defaultNonceCap() int {
	if p == ProfileWebhook {
		return 100_000
	}
	return 1_000_000
}
