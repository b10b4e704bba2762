package seller

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/adcp-go/idempotency/httpsig"
)

// RequestSigning configures how the seller verifies RFC 9421 signed
// requests under the AdCP request-signing profile (docs/security.mdx,
// "Signed Requests (Transport Layer)").
//
// The seller always verifies: a request carrying Signature or
// Signature-Input runs the profile's verifier checklist and, when it fails,
// is refused with 401 and WWW-Authenticate: Signature error="<code>",
// whatever bearer token it also carries. An unsigned request is
// authenticated by its bearer token exactly as without signing, except
// where the policy requires a signature: an operation in required_for
// presented without any valid credential, or a webhook registration
// carrying a legacy authentication block.
type RequestSigning struct {
	// Signers are the counterparties whose signatures are accepted. A
	// verified signature authenticates its Signer's Principal. Empty by
	// default: every signature is then refused with
	// request_signature_key_unknown.
	Signers []Signer
	// Revocations is the revocation check, run before any cryptographic
	// work. An operator polling its counterparties' revocation lists plugs
	// an httpsig.RevocationList in here. Defaults to no revoked keys.
	Revocations httpsig.RevocationChecker
	// Nonces is the replay cache of (keyid, nonce). It must be shared by
	// every process serving the seller. Defaults to an in-memory store
	// capped at httpsig.DefaultRequestNonceCap entries per keyid.
	Nonces httpsig.NonceStore
	// Scheme is the scheme of the URLs signers sign, "https" when TLS
	// terminates in front of the seller. Defaults to the scheme the request
	// arrived on.
	Scheme string
	// Now is the verifier's clock. Defaults to time.Now.
	Now func() time.Time
	// Policy is the verifier policy of the MCP endpoint, and its
	// Capability is the request_signing block of get_adcp_capabilities.
	// Defaults to DefaultSigningPolicy().
	Policy *SigningPolicy
	// Grading, when set, serves a verify-only grading endpoint under this
	// policy at /adcp/ and /mcp/adcp/, where black-box graders (the AdCP
	// runner's signed_requests storyboard) post the conformance vectors,
	// one URL per operation. A request that passes is answered 200 and
	// discarded; nothing is dispatched. Sandbox only: the endpoint exists
	// to be probed, and is not advertised in capabilities.
	Grading *SigningPolicy
}

// Signer is a counterparty that signs its requests.
type Signer struct {
	// Principal is the identity a verified signature authenticates: the
	// scope of the caller's idempotency keys and media buys, as the
	// principal of a bearer token is. Use the principal of the same
	// counterparty's bearer token so that signed and unsigned calls share
	// one key space.
	Principal string
	// Keys is the counterparty's published JWKS (its agents[] jwks_uri).
	// A kid may belong to one Signer only.
	Keys *httpsig.JWKS
}

// SigningPolicy is the verifier policy of one endpoint: the profile it
// speaks and its request_signing capability (required_for, warn_for and,
// for a legacy endpoint, covers_content_digest). The profile is trusted
// endpoint configuration, never inferred from a request.
type SigningPolicy struct {
	// Profile is httpsig.ProfileRequest (AdCP 3.2) or
	// httpsig.ProfileRequestLegacy (a 3.0/3.1 compatibility endpoint).
	Profile httpsig.Profile
	// Capability is what the endpoint enforces and advertises.
	Capability httpsig.Capability
}

// DefaultSigningPolicy is the MCP endpoint's policy: the AdCP 3.2 profile,
// content-digest required on every signed request with a body, signatures
// verified on create_media_buy and update_media_buy and required for no
// operation (the spec's pilot posture: unsigned callers keep using their
// bearer token).
func DefaultSigningPolicy() SigningPolicy {
	return SigningPolicy{Profile: httpsig.ProfileRequest, Capability: httpsig.Capability{
		Supported:           true,
		CoversContentDigest: httpsig.DigestRequired,
		SupportedFor:        []string{"create_media_buy", "update_media_buy"},
	}}
}

// ConformancePrincipal is the principal ConformanceSigning authenticates.
const ConformancePrincipal = "adcp-conformance-runner"

// conformanceKeys holds the public halves of the AdCP conformance test
// keys (test-vectors/request-signing/keys.json of the AdCP spec, 3.0.6 to
// 3.2): test-ed25519-2026, test-es256-2026, test-gov-2026 (a governance
// key, for the cross-purpose vector) and test-revoked-2026.
//
//go:embed conformance-keys.json
var conformanceKeys []byte

// ConformanceSigning is the configuration the AdCP compliance runner's
// signed_requests storyboard expects of a sandbox seller
// (test-kits/signed-requests-runner.yaml): it trusts the spec's published
// test keys as the signer ConformancePrincipal, revokes test-revoked-2026,
// caps the replay cache at the kit's grading target of 100 entries per
// keyid, and serves the grading endpoint with the policy of the 3.1
// conformance vectors (the legacy profile, content-digest optional,
// required for create_media_buy), which is the wire format the runner
// signs in.
//
// SANDBOX ONLY. The private halves of these keys are published with the
// spec: anyone can sign as ConformancePrincipal. Never use this
// configuration where the seller holds real money or data; the
// adcp-seller command enables it only with -dev and
// -trust-conformance-keys.
func ConformanceSigning() (*RequestSigning, error) {
	keys, err := httpsig.ParseJWKS(conformanceKeys)
	if err != nil {
		return nil, fmt.Errorf("seller: conformance keys: %w", err)
	}
	return &RequestSigning{
		Signers:     []Signer{{Principal: ConformancePrincipal, Keys: keys}},
		Revocations: revokedKeys{"test-revoked-2026"},
		Nonces:      &httpsig.MemoryNonceStore{PerKeyCap: 100, TotalCap: httpsig.DefaultTotalNonceCap},
		Grading: &SigningPolicy{Profile: httpsig.ProfileRequestLegacy, Capability: httpsig.Capability{
			Supported:           true,
			CoversContentDigest: httpsig.DigestEither,
			RequiredFor:         []string{"create_media_buy"},
			SupportedFor:        []string{"create_media_buy"},
		}},
	}, nil
}

// revokedKeys is a revocation list kept in configuration rather than
// polled: it never goes stale.
type revokedKeys []string

func (r revokedKeys) CheckRevocation(_ context.Context, keyID string) error {
	if slices.Contains(r, keyID) {
		return httpsig.ErrKeyRevoked
	}
	return nil
}

// signatures is the seller's signature gate: the verifier of each endpoint
// and what it needs to compose signatures with bearer tokens.
type signatures struct {
	log        *slog.Logger
	tokens     map[string]string
	principals map[string]string // kid → Signer.Principal
	maxBody    int64
	mcp        *endpointPolicy
	grading    *endpointPolicy // nil unless sandbox grading is configured
}

type endpointPolicy struct {
	verifier   *httpsig.Verifier
	capability httpsig.Capability
}

func newSignatures(cfg Config, log *slog.Logger, maxBody int64) (*signatures, error) {
	rs := cfg.RequestSigning
	if rs == nil {
		rs = &RequestSigning{}
	}
	g := &signatures{log: log, tokens: cfg.Tokens, principals: map[string]string{}, maxBody: maxBody}
	keys := &httpsig.JWKS{}
	for _, s := range rs.Signers {
		if s.Principal == "" || s.Keys == nil {
			return nil, errors.New("seller: a RequestSigning.Signers entry needs a Principal and Keys")
		}
		for _, k := range s.Keys.Keys {
			g.principals[k.Kid] = s.Principal
		}
		keys.Keys = append(keys.Keys, s.Keys.Keys...)
	}
	if err := keys.Validate(); err != nil { // a kid in two signers' sets
		return nil, fmt.Errorf("seller: RequestSigning.Signers: %w", err)
	}
	nonces := rs.Nonces
	if nonces == nil {
		nonces = httpsig.NewMemoryNonceStore(httpsig.DefaultRequestNonceCap)
	}
	endpoint := func(p SigningPolicy) (*endpointPolicy, error) {
		if p.Profile != httpsig.ProfileRequest && p.Profile != httpsig.ProfileRequestLegacy {
			return nil, fmt.Errorf("seller: signing profile %v is not a request profile", p.Profile)
		}
		if err := p.Capability.Validate(p.Profile); err != nil {
			return nil, fmt.Errorf("seller: %w", err)
		}
		v := httpsig.NewVerifier(p.Profile, keys)
		v.Nonces, v.Revocations, v.Scheme, v.Now = nonces, rs.Revocations, rs.Scheme, rs.Now
		v.LegacyDigestPolicy = p.Capability.CoversContentDigest
		return &endpointPolicy{verifier: v, capability: p.Capability}, nil
	}
	policy := DefaultSigningPolicy()
	if rs.Policy != nil {
		policy = *rs.Policy
	}
	var err error
	if g.mcp, err = endpoint(policy); err != nil {
		return nil, err
	}
	if rs.Grading != nil {
		if g.grading, err = endpoint(*rs.Grading); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// capability is the request_signing block of get_adcp_capabilities.
func (g *signatures) capability() httpsig.Capability { return g.mcp.capability }

// signerKey carries the principal of a verified signature from verifyMCP to
// the bearer-token layer (signerOr).
type signerKey struct{}

// signedCredential is the credential verifyMCP presents to the bearer-token
// layer for a verified signature: the MCP SDK takes the caller's identity
// only from auth.RequireBearerToken, so the signature travels as a bearer
// credential that signerOr resolves from the request context, never from
// the token's value.
const signedCredential = "rfc9421-verified-signature"

// verifyMCP wraps the MCP endpoint (the bearer-token layer and the MCP
// handler): signed requests are verified, and a verified signature
// authenticates its signer; unsigned ones continue to the bearer-token
// layer unless the policy requires a signature.
func (g *signatures) verifyMCP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, principal, ok := g.check(w, r, g.mcp, httpsig.RequestOperation)
		if !ok {
			return
		}
		if principal != "" {
			r = r.WithContext(context.WithValue(r.Context(), signerKey{}, principal))
			r.Header.Del("X-Adcp-Auth")
			r.Header.Set("Authorization", "Bearer "+signedCredential)
		}
		next.ServeHTTP(w, r)
	})
}

// signerOr wraps the bearer-token verifier: the credential verifyMCP
// presents for a verified signature yields the signer's principal; any
// other token goes to verify.
func (g *signatures) signerOr(verify auth.TokenVerifier) auth.TokenVerifier {
	return func(ctx context.Context, token string, r *http.Request) (*auth.TokenInfo, error) {
		if p, ok := r.Context().Value(signerKey{}).(string); ok && token == signedCredential {
			return &auth.TokenInfo{UserID: p, Expiration: time.Now().Add(time.Hour)}, nil
		}
		return verify(ctx, token, r)
	}
}

// gradingEndpoint serves the sandbox grading endpoint in front of next
// when it is configured. It sits in front of the ServeMux because the
// conformance vectors' request targets are not clean paths (dot segments,
// encoded slashes), which the ServeMux would redirect.
func (g *signatures) gradingEndpoint(next http.Handler) http.Handler {
	if g.grading == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/adcp/") && !strings.HasPrefix(r.URL.Path, "/mcp/adcp/") {
			next.ServeHTTP(w, r)
			return
		}
		r, principal, ok := g.check(w, r, g.grading, httpsig.RequestOperation)
		if !ok {
			return
		}
		if principal == "" && !g.bearerValid(r) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			reply(w, http.StatusUnauthorized, map[string]any{"error": "unauthenticated"})
			return
		}
		reply(w, http.StatusOK, map[string]any{"verified_signer": principal != "", "dispatched": false})
	})
}

// check runs the signature pre-check and, for a signed request, the
// verifier checklist of ep, and answers a rejection itself. Otherwise it
// returns the request (its body buffered) and ok; principal is the signer
// a verified signature authenticated, "" when the request proceeds on its
// bearer token (or on none, for the bearer layer to refuse). operation
// names what the request invokes, for the policy's required_for and
// warn_for (it differs between MCP and A2A).
func (g *signatures) check(w http.ResponseWriter, r *http.Request, ep *endpointPolicy,
	operation func(*http.Request, []byte) httpsig.Operation) (_ *http.Request, principal string, ok bool) {
	signed := r.Header.Get("Signature") != "" || r.Header.Get("Signature-Input") != ""
	body, err := io.ReadAll(io.LimitReader(r.Body, g.maxBody+1))
	switch {
	case err != nil:
		reply(w, http.StatusBadRequest, map[string]any{"error": "body_unreadable"})
		return nil, "", false
	case int64(len(body)) > g.maxBody && signed:
		reply(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "payload_too_large"})
		return nil, "", false
	case int64(len(body)) > g.maxBody:
		// Unsigned and too large: the MCP layer refuses it as before.
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		return r, "", true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	verified, verr := ep.verifier.Verify(r.Context(), r, body)
	unsigned := errors.Is(verr, httpsig.ErrUnsigned)
	d := httpsig.Requirement{
		Mode:                  ep.capability.ModeFor(operation(r, body)),
		Mandatory:             unsigned && ep.capability.Supported && mayCarryWebhookAuth(body) && httpsig.CarriesWebhookAuthentication(body),
		FallbackAuthenticated: g.bearerValid(r),
	}.Decide(verr)
	switch d.Action {
	case httpsig.ActionAccept:
		if d.VerifiedSigner() {
			return r, g.principals[verified.KeyID], true
		}
		return r, "", true
	case httpsig.ActionAcceptWithWarning:
		g.log.Warn("request signature failed in shadow mode; continuing on the bearer token", "code", ep.verifier.Profile.Code(d.Err))
		return r, "", true
	case httpsig.ActionRejectUnauthenticated:
		if d.Err == nil {
			return r, "", true // unsigned: the bearer-token layer refuses it
		}
	}
	g.reject(w, d.Err)
	return nil, "", false
}

// reject answers a signature failure: 401 with the stable code only (the
// spec forbids echoing details), or 503 when a hook failed operationally.
func (g *signatures) reject(w http.ResponseWriter, err error) {
	var e *httpsig.Error
	if !errors.As(err, &e) {
		g.log.Error("request signature verification unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		reply(w, http.StatusServiceUnavailable, map[string]any{"error": "verification_unavailable"})
		return
	}
	g.log.Info("request signature rejected", "code", e.Code, "step", e.Step)
	w.Header().Set("WWW-Authenticate", e.Challenge())
	reply(w, http.StatusUnauthorized, map[string]any{"error": e.Code})
}

// bearerValid reports whether r presents a bearer token the seller
// accepts, in Authorization or, without it, in x-adcp-auth.
func (g *signatures) bearerValid(r *http.Request) bool {
	token := r.Header.Get("X-Adcp-Auth")
	if h := r.Header.Get("Authorization"); h != "" {
		f := strings.Fields(h)
		if len(f) != 2 || !strings.EqualFold(f[0], "bearer") {
			return false
		}
		token = f[1]
	}
	_, ok := g.tokens[token]
	return ok && token != ""
}

// mayCarryWebhookAuth is a cheap filter in front of the JSON walk of
// httpsig.CarriesWebhookAuthentication, which most requests need not pay:
// the member name appears literally or is written with escapes.
func mayCarryWebhookAuth(body []byte) bool {
	return bytes.Contains(body, []byte("authentication")) || bytes.Contains(body, []byte(`\u`))
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
