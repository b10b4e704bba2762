package httpsig

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// WellKnownJWKSPath is where an agent's signing keys are published when its
// brand.json agents[] entry declares no jwks_uri: the path under the
// origin of the agent's url.
const WellKnownJWKSPath = "/.well-known/jwks.json"

// JWKSContentType is the media type of a JWK Set document (RFC 7517 §8.5).
const JWKSContentType = "application/jwk-set+json"

// JWK is a public JSON Web Key (RFC 7517) with the AdCP adcp_use member.
// Only the members AdCP signing keys use are modelled; private members are
// never represented.
type JWK struct {
	// Kid is unique within the JWKS, whatever the key's adcp_use.
	Kid string `json:"kid"`
	// Kty and Crv are "OKP"/"Ed25519" or "EC"/"P-256".
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	// X and Y are the unpadded Base64URL public coordinates (Y for EC).
	X string `json:"x,omitempty"`
	Y string `json:"y,omitempty"`
	// Alg is the JWS name, "EdDSA" or "ES256".
	Alg string `json:"alg,omitempty"`
	// Use must be "sig".
	Use string `json:"use,omitempty"`
	// KeyOps must include "verify".
	KeyOps []string `json:"key_ops,omitempty"`
	// AdCPUse is the AdCP key purpose, "request-signing" for transport
	// and webhook signing keys.
	AdCPUse string `json:"adcp_use,omitempty"`
}

// NewPublicJWK describes pub (ed25519.PublicKey or a P-256
// *ecdsa.PublicKey) as an AdCP request-signing JWK: use "sig", key_ops
// ["verify"], adcp_use "request-signing", and alg "EdDSA" or "ES256". The
// same key signs webhooks; domain separation is carried by the tag.
func NewPublicJWK(kid string, pub crypto.PublicKey) (JWK, error) {
	if kid == "" {
		return JWK{}, errors.New("httpsig: empty kid")
	}
	k := JWK{Kid: kid, Use: "sig", KeyOps: []string{"verify"}, AdCPUse: AdCPUseRequestSigning}
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return JWK{}, errors.New("httpsig: invalid Ed25519 public key")
		}
		k.Kty, k.Crv, k.Alg = "OKP", "Ed25519", "EdDSA"
		k.X = base64.RawURLEncoding.EncodeToString(pub)
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return JWK{}, errors.New("httpsig: ECDSA key is not on P-256")
		}
		raw, err := pub.Bytes() // 0x04 || X || Y
		if err != nil {
			return JWK{}, fmt.Errorf("httpsig: %w", err)
		}
		k.Kty, k.Crv, k.Alg = "EC", "P-256", "ES256"
		k.X = base64.RawURLEncoding.EncodeToString(raw[1:33])
		k.Y = base64.RawURLEncoding.EncodeToString(raw[33:])
	default:
		return JWK{}, fmt.Errorf("httpsig: unsupported public key type %T", pub)
	}
	return k, nil
}

// PublicKey decodes the key material: ed25519.PublicKey for OKP/Ed25519,
// *ecdsa.PublicKey for EC/P-256 (checked to be on the curve). It also
// requires alg, when present, to be consistent with kty and crv
// (RFC 8037 §3.1, RFC 7518 §3.4).
func (k *JWK) PublicKey() (crypto.PublicKey, error) {
	switch {
	case k.Kty == "OKP" && k.Crv == "Ed25519":
		if k.Alg != "" && k.Alg != "EdDSA" {
			return nil, fmt.Errorf("httpsig: JWK alg %q inconsistent with OKP/Ed25519", k.Alg)
		}
		x, err := base64.RawURLEncoding.Strict().DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("httpsig: invalid Ed25519 x")
		}
		return ed25519.PublicKey(x), nil
	case k.Kty == "EC" && k.Crv == "P-256":
		if k.Alg != "" && k.Alg != "ES256" {
			return nil, fmt.Errorf("httpsig: JWK alg %q inconsistent with EC/P-256", k.Alg)
		}
		x, errX := base64.RawURLEncoding.Strict().DecodeString(k.X)
		y, errY := base64.RawURLEncoding.Strict().DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return nil, errors.New("httpsig: invalid P-256 coordinates")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("httpsig: P-256 point: %w", err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("httpsig: unsupported key type kty=%q crv=%q", k.Kty, k.Crv)
}

// jwkAlgFor maps an RFC 9421 alg to the JWS alg name a JWK must declare.
func jwkAlgFor(sigAlg string) string {
	switch sigAlg {
	case AlgEd25519:
		return "EdDSA"
	case AlgECDSAP256SHA256:
		return "ES256"
	}
	return ""
}

// checkKey is checklist step 8: the JWK must be a signing key whose
// purpose the profile accepts and whose alg/kty/crv agree with the
// signature's alg. It returns the decoded public key.
func checkKey(p Profile, k *JWK, sigAlg string) (crypto.PublicKey, error) {
	if k.Use != "sig" {
		return nil, fmt.Errorf("JWK use is %q, not \"sig\"", k.Use)
	}
	if !slices.Contains(k.KeyOps, "verify") {
		return nil, errors.New("JWK key_ops does not include \"verify\"")
	}
	if !p.allowsKeyUse(k.AdCPUse) {
		return nil, fmt.Errorf("JWK adcp_use %q is not valid for the %s profile", k.AdCPUse, p)
	}
	if k.Alg == "" {
		return nil, errors.New("JWK declares no alg")
	}
	if k.Alg != jwkAlgFor(sigAlg) {
		return nil, fmt.Errorf("JWK alg %q does not match signature alg %q", k.Alg, sigAlg)
	}
	return k.PublicKey()
}

// KeySource resolves a keyid to the signer's published JWK (checklist
// step 7). Implementations that fetch a remote JWKS should refetch once on
// a miss (subject to the profile's 30-second cooldown) before returning an
// error matching ErrKeyUnknown. Any other error is treated as an
// operational failure, not a verdict.
type KeySource interface {
	LookupKey(ctx context.Context, keyID string) (*JWK, error)
}

// JWKS is a JWK Set document, {"keys":[...]}. It implements KeySource over
// a fixed set of keys; publish several keys at once to rotate.
type JWKS struct {
	// Keys are the published keys, typically the current one plus the
	// next or previous one during a rotation.
	Keys []JWK `json:"keys"`
}

// NewJWKS returns a set of keys after validating it (see JWKS.Validate).
func NewJWKS(keys ...JWK) (*JWKS, error) {
	s := &JWKS{Keys: slices.Clone(keys)}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// ParseJWKS parses a JWK Set document strictly: duplicate JSON object keys
// and duplicate kids are rejected.
func ParseJWKS(data []byte) (*JWKS, error) {
	if err := checkJSON(data); err != nil {
		return nil, fmt.Errorf("httpsig: JWKS: %w", err)
	}
	var s JWKS
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("httpsig: JWKS: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks that every key has a kid and that no kid appears twice,
// whatever its adcp_use.
func (s *JWKS) Validate() error {
	seen := map[string]bool{}
	for _, k := range s.Keys {
		if k.Kid == "" {
			return errors.New("httpsig: JWKS entry without kid")
		}
		if seen[k.Kid] {
			return fmt.Errorf("httpsig: JWKS kid %q appears more than once", k.Kid)
		}
		seen[k.Kid] = true
	}
	return nil
}

// LookupKey returns the key whose kid is keyID. It reports ErrKeyUnknown
// when there is none and ErrKeyPurposeInvalid when the kid is ambiguous.
func (s *JWKS) LookupKey(_ context.Context, keyID string) (*JWK, error) {
	var found *JWK
	for i := range s.Keys {
		if s.Keys[i].Kid == keyID {
			if found != nil {
				return nil, fmt.Errorf("%w: kid %q appears more than once", ErrKeyPurposeInvalid, keyID)
			}
			k := s.Keys[i]
			found = &k
		}
	}
	if found == nil {
		return nil, ErrKeyUnknown
	}
	return found, nil
}

// JWKSHandler serves a JWK Set, typically at WellKnownJWKSPath. Publish
// swaps the served set atomically, which is how keys are rotated: publish
// the new key alongside the old one, switch signers to it, and publish the
// set without the old key once its signatures can no longer be in flight.
// The zero value serves 503 until the first Publish.
type JWKSHandler struct {
	// MaxAge is the Cache-Control max-age. Verifiers bound their JWKS
	// cache by the revocation polling interval (1–30 minutes); the default
	// is 5 minutes so rotations propagate quickly.
	MaxAge time.Duration

	doc atomic.Pointer[servedJWKS]
}

type servedJWKS struct {
	body []byte
	etag string
}

// Publish validates set and makes it the served document.
func (h *JWKSHandler) Publish(set *JWKS) error {
	if err := set.Validate(); err != nil {
		return err
	}
	keys := set.Keys
	if keys == nil {
		keys = []JWK{}
	}
	body, err := json.Marshal(JWKS{Keys: keys})
	if err != nil {
		return fmt.Errorf("httpsig: %w", err)
	}
	sum := sha256.Sum256(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
	h.doc.Store(&servedJWKS{body: body, etag: etag})
	return nil
}

// ServeHTTP serves the published set to GET and HEAD requests, with an
// ETag and conditional-request support.
func (h *JWKSHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	doc := h.doc.Load()
	if doc == nil {
		http.Error(w, "no keys published", http.StatusServiceUnavailable)
		return
	}
	maxAge := h.MaxAge
	if maxAge <= 0 {
		maxAge = 5 * time.Minute
	}
	hdr := w.Header()
	hdr.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(maxAge/time.Second)))
	hdr.Set("ETag", doc.etag)
	hdr.Set("X-Content-Type-Options", "nosniff")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, doc.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr.Set("Content-Type", JWKSContentType)
	hdr.Set("Content-Length", strconv.Itoa(len(doc.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc.body)
	}
}

// etagMatch implements the weak comparison of If-None-Match.
func etagMatch(header, etag string) bool {
	for _, t := range splitList(header) {
		if t == "*" || t == etag || t == "W/"+etag {
			return true
		}
	}
	return false
}

func splitList(s string) []string {
	var out []string
	start := 0
	quoted := false
	for i := 0; i <= len(s); i++ {
		if i == len(s) || (s[i] == ',' && !quoted) {
			if t := trimOWS(s[start:i]); t != "" {
				out = append(out, t)
			}
			start = i + 1
			continue
		}
		if s[i] == '"' {
			quoted = !quoted
		}
	}
	return out
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
