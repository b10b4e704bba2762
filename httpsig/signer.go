package httpsig

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"time"
)

// Signer signs outgoing requests under one AdCP profile with one key.
// Create it with NewSigner; the exported fields may then be adjusted
// before first use. A Signer is safe for concurrent use once configured.
type Signer struct {
	// Profile selects the tag, the covered components and the binary
	// encodings.
	Profile Profile
	// KeyID is the kid of the key in the signer's published JWKS.
	KeyID string
	// Key is the private key: an ed25519.PrivateKey, a P-256
	// *ecdsa.PrivateKey, or any crypto.Signer (e.g. a KMS handle) whose
	// public key is one of those.
	Key crypto.Signer

	// Validity is expires − created. Zero means MaxValidity; it may not
	// exceed MaxValidity and is truncated to whole seconds.
	Validity time.Duration
	// Components overrides the covered components. Nil selects the
	// profile's set: @method, @target-uri, @authority, then content-type
	// and content-digest (always for webhooks; for requests only when the
	// body is non-empty). Verifiers reject other sets unless coordinated.
	Components []string
	// Label is the signature label; empty means DefaultLabel.
	Label string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NonceSource supplies the 16 random nonce bytes; nil means
	// crypto/rand. Set it only in tests; it must be safe for concurrent
	// use if Sign is called concurrently.
	NonceSource io.Reader
}

// Signature describes a signature produced by Signer.Sign.
type Signature struct {
	// Label is the label of the Signature-Input and Signature members.
	Label string
	// Params are the covered components and sig-params that were signed.
	Params Params
	// Base is the exact RFC 9421 signature base that was signed.
	Base string
	// Value is the signature: 64 bytes, Ed25519 or IEEE P1363 r||s.
	Value []byte
}

// NewSigner returns a Signer for profile that signs with key under keyID.
func NewSigner(profile Profile, keyID string, key crypto.Signer) (*Signer, error) {
	s := &Signer{Profile: profile, KeyID: keyID, Key: key}
	if _, err := s.check(); err != nil {
		return nil, err
	}
	return s, nil
}

// Alg returns the RFC 9421 alg of the signer's key, or "" if unsupported.
func (s *Signer) Alg() string {
	alg, _ := algForKey(s.Key)
	return alg
}

// PublicJWK returns the JWK to publish for the signer's key (see
// NewPublicJWK).
func (s *Signer) PublicJWK() (JWK, error) {
	if s.Key == nil {
		return JWK{}, errors.New("httpsig: Signer has no key")
	}
	return NewPublicJWK(s.KeyID, s.Key.Public())
}

func algForKey(key crypto.Signer) (string, error) {
	if key == nil {
		return "", errors.New("httpsig: Signer has no key")
	}
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		return AlgEd25519, nil
	case *ecdsa.PublicKey:
		if pub.Curve == elliptic.P256() {
			return AlgECDSAP256SHA256, nil
		}
	}
	return "", fmt.Errorf("httpsig: unsupported signing key %T (need Ed25519 or ECDSA P-256)", key.Public())
}

func (s *Signer) check() (alg string, err error) {
	if !s.Profile.valid() {
		return "", fmt.Errorf("httpsig: invalid profile %v", s.Profile)
	}
	if s.KeyID == "" {
		return "", errors.New("httpsig: Signer has no KeyID")
	}
	if s.Validity < 0 || s.Validity > MaxValidity {
		return "", fmt.Errorf("httpsig: Validity %v outside (0, %v]", s.Validity, MaxValidity)
	}
	if s.Validity != 0 && s.Validity < time.Second {
		return "", errors.New("httpsig: Validity under one second")
	}
	for _, c := range s.Components {
		if err := checkComponentName(c); err != nil {
			return "", fmt.Errorf("httpsig: %w", err)
		}
	}
	return algForKey(s.Key)
}

func (s *Signer) components(body []byte) []string {
	if s.Components != nil {
		return slices.Clone(s.Components)
	}
	c := []string{"@method", "@target-uri", "@authority"}
	if s.Profile == ProfileWebhook || len(body) > 0 {
		c = append(c, "content-type", "content-digest")
	}
	return c
}

// Sign signs the outgoing request r whose body is body. It sets r's body
// to body (so the signed bytes are the sent bytes), sets Content-Digest
// when content-digest is covered, and replaces any Signature-Input and
// Signature fields with the new signature. r.URL must be absolute; the
// target URI is canonicalized, and a URL that cannot be (an IPv6 zone
// identifier, an empty DNS label, ...) is refused with an error matching
// ErrTargetURIMalformed.
func (s *Signer) Sign(r *http.Request, body []byte) (*Signature, error) {
	alg, err := s.check()
	if err != nil {
		return nil, err
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	validity := s.Validity
	if validity == 0 {
		validity = MaxValidity
	}
	created := now().Unix()
	nonce, err := s.nonce()
	if err != nil {
		return nil, err
	}
	label := s.Label
	if label == "" {
		label = DefaultLabel
	}
	p := Params{
		Components: s.components(body),
		Created:    time.Unix(created, 0),
		Expires:    time.Unix(created+int64(validity/time.Second), 0),
		Nonce:      nonce,
		KeyID:      s.KeyID,
		Alg:        alg,
		Tag:        s.Profile.Tag(),
	}

	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	if r.Header == nil {
		r.Header = http.Header{}
	}
	if slices.Contains(p.Components, "content-digest") {
		r.Header.Set("Content-Digest", ContentDigest(s.Profile, body))
	}
	base, err := SignatureBase(r, p)
	if err != nil {
		return nil, fmt.Errorf("httpsig: %w", err)
	}
	value, err := signBase(s.Key, alg, base)
	if err != nil {
		return nil, err
	}
	r.Header.Set("Signature-Input", label+"="+p.String())
	r.Header.Set("Signature", label+"=:"+encodeBinary(value, s.Profile.signatureEncoding())+":")
	return &Signature{Label: label, Params: p, Base: base, Value: value}, nil
}

func (s *Signer) nonce() (string, error) {
	src := s.NonceSource
	if src == nil {
		src = rand.Reader
	}
	b := make([]byte, MinNonceBytes)
	if _, err := io.ReadFull(src, b); err != nil {
		return "", fmt.Errorf("httpsig: reading nonce: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// signBase signs the signature base: Ed25519 over the bytes, ECDSA P-256
// over their SHA-256 digest, returned in IEEE P1363 r||s form.
func signBase(key crypto.Signer, alg, base string) ([]byte, error) {
	switch alg {
	case AlgEd25519:
		sig, err := key.Sign(rand.Reader, []byte(base), crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("httpsig: signing: %w", err)
		}
		return sig, nil
	case AlgECDSAP256SHA256:
		digest := sha256.Sum256([]byte(base))
		der, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("httpsig: signing: %w", err)
		}
		var rs struct{ R, S *big.Int }
		rest, err := asn1.Unmarshal(der, &rs)
		if err != nil || len(rest) != 0 || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
			return nil, errors.New("httpsig: signer returned a malformed ECDSA signature")
		}
		out := make([]byte, 64)
		rs.R.FillBytes(out[:32])
		rs.S.FillBytes(out[32:])
		return out, nil
	}
	return nil, fmt.Errorf("httpsig: unsupported alg %q", alg)
}

// verifyBase checks sig over base with pub.
func verifyBase(pub any, alg, base string, sig []byte) bool {
	switch alg {
	case AlgEd25519:
		k, ok := pub.(ed25519.PublicKey)
		return ok && len(sig) == ed25519.SignatureSize && ed25519.Verify(k, []byte(base), sig)
	case AlgECDSAP256SHA256:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || len(sig) != 64 {
			return false
		}
		digest := sha256.Sum256([]byte(base))
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k, digest[:], r, s)
	}
	return false
}
