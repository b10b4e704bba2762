// Package httpsig implements the AdCP profile of RFC 9421 HTTP Message
// Signatures: signing and verification for the webhook-callback profile
// (tag "adcp/webhook-signing/v1") and the transport request-signing profile
// (tag "adcp/request-signing/v1"), in its AdCP 3.2 form and its 3.0/3.1
// legacy form.
//
// The profile fixes one canonical shape: the covered components are
// @method, @target-uri, @authority, content-type and content-digest; the
// six sig-params created, expires (at most 300 s after created), nonce
// (≥ 128 random bits, unpadded Base64URL), keyid, alg (ed25519 or
// ecdsa-p256-sha256) and tag are all required; exactly one label ("sig1")
// is processed.
//
// A Signer signs an outgoing *http.Request and its body:
//
//	s, err := httpsig.NewSigner(httpsig.ProfileWebhook, "my-kid", privateKey)
//	...
//	_, err = s.Sign(req, body)
//
// A Verifier runs the spec's verifier checklist on an inbound request in the
// prescribed order, short-circuiting on the first failure, and reports each
// failure as an *Error carrying the exact AdCP error code
// ("webhook_signature_*" or "request_signature_*"). Every *Error also
// matches a profile-independent sentinel such as ErrReplayed with
// errors.Is. Key resolution (KeySource), revocation (RevocationChecker)
// and the replay cache (NonceStore) are interfaces; JWKS,
// RevocationList and MemoryNonceStore are in-memory implementations.
//
// JWKSHandler publishes a key set at WellKnownJWKSPath; CanonicalTargetURI
// exposes the @target-uri canonicalization; Capability and Requirement
// compose signature verification with an endpoint's required_for /
// warn_for policy and fallback authenticators, RequestOperation naming the
// operation a request invokes.
//
// The normative text is the "Signed Requests (Transport Layer)" and
// "Webhook callbacks" sections of the AdCP security documentation; the
// package is tested against the AdCP conformance vectors, which package
// httpsigtest loads for any verifier's tests.
package httpsig
