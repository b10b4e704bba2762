package httpsig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dunglas/httpsfv"
)

// Params are the covered components and signature parameters of one
// signature: the value of its Signature-Input member.
type Params struct {
	// Components are the covered component identifiers, in order, e.g.
	// "@method", "@target-uri", "@authority", "content-type",
	// "content-digest".
	Components []string
	// Created and Expires bound the signature's validity (Unix seconds on
	// the wire).
	Created, Expires time.Time
	// Nonce is the unpadded Base64URL nonce (at least 16 random bytes).
	Nonce string
	// KeyID names the signing key in the signer's JWKS.
	KeyID string
	// Alg is AlgEd25519 or AlgECDSAP256SHA256.
	Alg string
	// Tag is the profile tag (TagWebhook or TagRequest).
	Tag string
}

// String returns the Signature-Input member value for p, which is also the
// value of the @signature-params line of the signature base. Parameters
// are emitted in the order created, expires, nonce, keyid, alg, tag.
func (p Params) String() string {
	il := httpsfv.InnerList{Params: httpsfv.NewParams()}
	for _, c := range p.Components {
		il.Items = append(il.Items, httpsfv.NewItem(c))
	}
	il.Params.Add("created", p.Created.Unix())
	il.Params.Add("expires", p.Expires.Unix())
	il.Params.Add("nonce", p.Nonce)
	il.Params.Add("keyid", p.KeyID)
	il.Params.Add("alg", p.Alg)
	il.Params.Add("tag", p.Tag)
	s, err := httpsfv.Marshal(il)
	if err != nil {
		// Only reachable with strings outside RFC 8941's printable
		// ASCII; the result is then unusable anyway.
		return fmt.Sprintf("<invalid params: %v>", err)
	}
	return s
}

// parsedSignature is the selected label of a Signature-Input/Signature pair.
type parsedSignature struct {
	label     string
	params    Params
	present   map[string]bool // which of the six sig-params were present
	sigParams string          // canonical serialization of the member (@signature-params)
	signature []byte
}

var requiredParams = [...]string{"created", "expires", "nonce", "keyid", "alg", "tag"}

// derivedComponents are the derived components this profile can compute.
var derivedComponents = map[string]bool{
	"@method": true, "@target-uri": true, "@authority": true,
	"@scheme": true, "@path": true, "@query": true,
}

// parseSignatureHeaders parses the combined Signature-Input and Signature
// field lines strictly and extracts the member named label. Members under
// other labels must be syntactically valid but are otherwise ignored.
// Errors are causes for ErrHeaderMalformed.
func parseSignatureHeaders(p Profile, label string, inputs, sigs []string) (*parsedSignature, error) {
	if len(inputs) == 0 || len(sigs) == 0 {
		return nil, errors.New("Signature and Signature-Input must be sent together")
	}
	inDict, err := parseDictionary(inputs, binStd)
	if err != nil {
		return nil, fmt.Errorf("Signature-Input: %w", err)
	}
	sigDict, err := parseDictionary(sigs, p.signatureEncoding())
	if err != nil {
		return nil, fmt.Errorf("Signature: %w", err)
	}
	m, ok := inDict.Get(label)
	if !ok {
		return nil, fmt.Errorf("Signature-Input has no label %q", label)
	}
	il, ok := m.(httpsfv.InnerList)
	if !ok {
		return nil, fmt.Errorf("Signature-Input member %q is not an inner list", label)
	}
	sm, ok := sigDict.Get(label)
	if !ok {
		return nil, fmt.Errorf("Signature has no label %q", label)
	}
	sitem, ok := sm.(httpsfv.Item)
	if !ok {
		return nil, fmt.Errorf("Signature member %q is not an item", label)
	}
	sigBytes, ok := sitem.Value.([]byte)
	if !ok {
		return nil, fmt.Errorf("Signature member %q is not a byte sequence", label)
	}

	ps := &parsedSignature{label: label, signature: sigBytes, present: map[string]bool{}}
	seen := map[string]bool{}
	for _, it := range il.Items {
		name, ok := it.Value.(string)
		if !ok {
			return nil, errors.New("covered component identifier is not a string")
		}
		if len(it.Params.Names()) != 0 {
			return nil, fmt.Errorf("covered component %q has parameters, which this profile does not support", name)
		}
		if err := checkComponentName(name); err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("covered component %q listed twice", name)
		}
		seen[name] = true
		ps.params.Components = append(ps.params.Components, name)
	}
	for _, k := range il.Params.Names() {
		v, _ := il.Params.Get(k)
		switch k {
		case "created", "expires":
			n, ok := v.(int64)
			if !ok {
				return nil, fmt.Errorf("sig-param %s is not an integer", k)
			}
			if k == "created" {
				ps.params.Created = time.Unix(n, 0)
			} else {
				ps.params.Expires = time.Unix(n, 0)
			}
		case "nonce", "keyid", "alg", "tag":
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("sig-param %s is not a string", k)
			}
			switch k {
			case "nonce":
				if err := checkNonce(s); err != nil {
					return nil, err
				}
				ps.params.Nonce = s
			case "keyid":
				ps.params.KeyID = s
			case "alg":
				ps.params.Alg = s
			case "tag":
				ps.params.Tag = s
			}
		default:
			continue // unknown parameters are signed but otherwise ignored
		}
		ps.present[k] = true
	}
	ps.sigParams, err = httpsfv.Marshal(il)
	if err != nil {
		return nil, fmt.Errorf("Signature-Input: %w", err)
	}
	return ps, nil
}

func checkComponentName(name string) error {
	if name == "" {
		return errors.New("empty covered component identifier")
	}
	if name[0] == '@' {
		if !derivedComponents[name] {
			return fmt.Errorf("unsupported derived component %q", name)
		}
		return nil
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isTChar(c) || (c >= 'A' && c <= 'Z') {
			return fmt.Errorf("invalid covered field name %q", name)
		}
	}
	return nil
}

// checkNonce enforces the profile's nonce format: unpadded Base64URL
// decoding to at least MinNonceBytes bytes.
func checkNonce(s string) error {
	if strings.ContainsRune(s, '=') {
		return errors.New("nonce is padded")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return errors.New("nonce is not unpadded base64url")
	}
	if len(b) < MinNonceBytes {
		return fmt.Errorf("nonce decodes to %d bytes, fewer than %d", len(b), MinNonceBytes)
	}
	return nil
}
