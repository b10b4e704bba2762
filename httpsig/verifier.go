package httpsig

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// Verifier runs the AdCP verifier checklist for one profile on inbound
// requests. Create it with NewVerifier and adjust the exported fields
// before first use; it is safe for concurrent use once configured.
type Verifier struct {
	// Profile is the trusted profile of the endpoint.
	Profile Profile
	// Keys resolves keyids to published JWKs (step 7).
	Keys KeySource
	// Nonces is the replay cache (steps 9a, 12, 13). NewVerifier installs
	// a MemoryNonceStore with the profile's recommended per-keyid cap.
	Nonces NonceStore
	// Revocations is the revocation check (step 9). Nil skips the check;
	// verifiers accepting signed mutations must configure one.
	Revocations RevocationChecker
	// LegacyDigestPolicy is the covers_content_digest policy of a
	// ProfileRequestLegacy endpoint. It is ignored by the other profiles:
	// webhooks always require content-digest, the 3.2 request profile
	// requires it whenever there is a body.
	LegacyDigestPolicy DigestPolicy
	// Label is the one signature label processed; other labels are
	// ignored. Empty means DefaultLabel.
	Label string
	// Scheme is the scheme of the target URI ("https" or "http"). Empty
	// takes it from the request (r.URL.Scheme, else r.TLS); set it when
	// TLS terminates in front of the server.
	Scheme string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verified describes a request whose signature passed every check.
type Verified struct {
	// Label is the processed signature label.
	Label string
	// KeyID is the verified signer key; map it to the agents[] entry
	// whose JWKS holds it to obtain the signing agent's identity.
	KeyID string
	// Key is the JWK that verified the signature.
	Key *JWK
	// Params are the verified covered components and sig-params.
	Params Params
	// Base is the signature base that was verified.
	Base string
}

// NewVerifier returns a Verifier for profile resolving keys through keys,
// with an in-memory replay cache.
func NewVerifier(profile Profile, keys KeySource) *Verifier {
	return &Verifier{
		Profile: profile,
		Keys:    keys,
		Nonces:  NewMemoryNonceStore(profile.defaultNonceCap()),
	}
}

// Verify applies the profile's verifier checklist to the inbound request r
// whose raw, unparsed body bytes are body, in the order the checklist
// prescribes and stopping at the first failure.
//
// It returns ErrUnsigned when r carries neither Signature nor
// Signature-Input, an *Error (matching one Err* sentinel) when a check
// fails, and another error when a hook fails operationally (for example a
// NonceStore outage); callers should answer the latter with 5xx rather
// than 401.
//
// Step 13 records the nonce before step 14 inspects the body, so a
// request rejected with ErrBodyMalformed cannot be replayed.
func (v *Verifier) Verify(ctx context.Context, r *http.Request, body []byte) (*Verified, error) {
	p := v.Profile
	if !p.valid() {
		return nil, fmt.Errorf("httpsig: Verifier has invalid profile %v", p)
	}
	if v.Keys == nil || v.Nonces == nil {
		return nil, errors.New("httpsig: Verifier needs Keys and Nonces")
	}
	if p == ProfileRequestLegacy && !v.LegacyDigestPolicy.valid() {
		return nil, fmt.Errorf("httpsig: invalid LegacyDigestPolicy %q", v.LegacyDigestPolicy)
	}
	label := v.Label
	if label == "" {
		label = DefaultLabel
	}

	inputs, sigs := r.Header.Values("Signature-Input"), r.Header.Values("Signature")
	if len(inputs) == 0 && len(sigs) == 0 {
		return nil, ErrUnsigned
	}

	// Step 1: parse both fields; structural checks on the covered fields
	// and on the request target that a verifier must not guess around.
	ps, err := parseSignatureHeaders(p, label, inputs, sigs)
	if err != nil {
		return nil, p.fail(ErrHeaderMalformed, "1", err)
	}
	if err := checkWire(r, v.Scheme); err != nil {
		return nil, p.fail(ErrHeaderMalformed, "1", err)
	}
	var digests map[string][]byte
	for _, c := range ps.params.Components {
		if c[0] == '@' {
			continue
		}
		if _, err := fieldValue(r.Header, c); err != nil {
			return nil, p.fail(ErrHeaderMalformed, "1", err)
		}
		if c == "content-digest" {
			if digests, err = parseContentDigest(r.Header.Values("Content-Digest"), p.digestDecoding()); err != nil {
				return nil, p.fail(ErrHeaderMalformed, "1", err)
			}
		}
	}
	params := ps.params

	// Step 2: all six sig-params present.
	for _, k := range requiredParams {
		if !ps.present[k] {
			return nil, p.fail(ErrParamsIncomplete, "2", fmt.Errorf("missing %s", k))
		}
	}
	// Step 3: tag, byte for byte.
	if params.Tag != p.Tag() {
		return nil, p.fail(ErrTagInvalid, "3", fmt.Errorf("tag %q", params.Tag))
	}
	// Step 4: alg allowlist.
	if params.Alg != AlgEd25519 && params.Alg != AlgECDSAP256SHA256 {
		return nil, p.fail(ErrAlgNotAllowed, "4", fmt.Errorf("alg %q", params.Alg))
	}
	// Step 5: validity window.
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if err := checkWindow(params, now); err != nil {
		return nil, p.fail(ErrWindowInvalid, "5", err)
	}
	// Step 6: covered components.
	if e := v.checkComponents(params.Components, len(body) > 0); e != nil {
		return nil, e
	}
	// Step 7: resolve keyid.
	jwk, err := v.Keys.LookupKey(ctx, params.KeyID)
	if err != nil {
		if e := p.failFrom(err, "7", nil); e != nil {
			return nil, e
		}
		return nil, fmt.Errorf("httpsig: key lookup: %w", err)
	}
	if jwk == nil {
		return nil, p.fail(ErrKeyUnknown, "7", nil)
	}
	// Step 8: key purpose and parameter consistency.
	pub, err := checkKey(p, jwk, params.Alg)
	if err != nil {
		return nil, p.fail(ErrKeyPurposeInvalid, "8", err)
	}
	// Step 9: revocation, before any cryptographic work.
	if v.Revocations != nil {
		if err := v.Revocations.CheckRevocation(ctx, params.KeyID); err != nil {
			if e := p.failFrom(err, "9", nil); e != nil {
				return nil, e
			}
			return nil, fmt.Errorf("httpsig: revocation check: %w", err)
		}
	}
	// Step 9a: per-keyid replay-cache cap, also before crypto.
	full, err := v.Nonces.AtCapacity(ctx, params.KeyID)
	if err != nil {
		return nil, fmt.Errorf("httpsig: replay cache: %w", err)
	}
	if full {
		return nil, p.fail(ErrRateAbuse, "9a", nil)
	}
	// Step 10: canonical target URI and authority, base, signature.
	m, err := newMessage(r, v.Scheme)
	if err != nil {
		return nil, p.fail(ErrTargetURIMalformed, "10", err)
	}
	base, err := buildBase(m, params.Components, ps.sigParams)
	if err != nil {
		return nil, p.fail(ErrHeaderMalformed, "10", err)
	}
	if !verifyBase(pub, params.Alg, base, ps.signature) {
		return nil, p.fail(ErrSignatureInvalid, "10", nil)
	}
	// Step 11: body digest.
	if digests != nil && !digestMatches(digests, body) {
		return nil, p.fail(ErrDigestMismatch, "11", nil)
	}
	// Steps 12 and 13: replay check and insert, atomically, TTL
	// (expires − now) + skew.
	if err := v.Nonces.Remember(ctx, params.KeyID, params.Nonce, params.Expires.Add(ClockSkew)); err != nil {
		if e := p.failFrom(err, "12", nil); e != nil {
			if errors.Is(err, ErrRateAbuse) {
				e.Step = "13"
			}
			return nil, e
		}
		return nil, fmt.Errorf("httpsig: replay cache: %w", err)
	}
	// Step 14: body well-formedness (JSON bodies).
	if len(body) > 0 && isJSONMediaType(r.Header.Get("Content-Type")) {
		if err := checkJSON(body); err != nil {
			return nil, p.fail(ErrBodyMalformed, "14", err)
		}
	}
	return &Verified{Label: ps.label, KeyID: params.KeyID, Key: jwk, Params: params, Base: base}, nil
}

// checkWire rejects request targets and Host values that are not ASCII:
// IDN hosts must travel as A-labels, and a verifier must not guess how a
// U-label was meant to be mapped.
func checkWire(r *http.Request, scheme string) error {
	raw, host, err := rawTarget(r, scheme)
	if err != nil {
		return nil // reported as a target URI failure at step 10
	}
	if !isASCII(raw) || !isASCII(host) {
		return errNonASCIIAuthority
	}
	return nil
}

func checkWindow(p Params, now time.Time) error {
	created, expires, t := p.Created.Unix(), p.Expires.Unix(), now.Unix()
	skew, maxV := int64(ClockSkew/time.Second), int64(MaxValidity/time.Second)
	switch {
	case expires <= created:
		return errors.New("expires is not after created")
	case expires-created > maxV:
		return fmt.Errorf("validity %ds exceeds %ds", expires-created, maxV)
	case created > t+skew:
		return errors.New("created is in the future")
	case expires < t-skew:
		return errors.New("signature expired")
	}
	return nil
}

// checkComponents is checklist step 6.
func (v *Verifier) checkComponents(comps []string, hasBody bool) *Error {
	incomplete := func(cause string) *Error {
		return v.Profile.fail(ErrComponentsIncomplete, "6", errors.New(cause))
	}
	for _, c := range []string{"@method", "@target-uri", "@authority"} {
		if !slices.Contains(comps, c) {
			return incomplete(c + " not covered")
		}
	}
	coversDigest := slices.Contains(comps, "content-digest")
	needType, needDigest := hasBody, hasBody
	switch v.Profile {
	case ProfileWebhook:
		needType, needDigest = true, true
	case ProfileRequestLegacy:
		switch v.LegacyDigestPolicy {
		case DigestForbidden:
			if coversDigest {
				return v.Profile.fail(ErrComponentsUnexpected, "6", errors.New("content-digest covered but the endpoint forbids it"))
			}
			needDigest = false
		case DigestEither:
			needDigest = false
		}
	}
	if needType && !slices.Contains(comps, "content-type") {
		return incomplete("content-type not covered")
	}
	if needDigest && !coversDigest {
		return incomplete("content-digest not covered")
	}
	return nil
}
