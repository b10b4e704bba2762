package httpsig

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dunglas/httpsfv"
)

// message is the view of an HTTP request that signature bases are built
// from: its method, canonical target URI and header fields.
type message struct {
	method string
	target canonURL
	header http.Header
}

// rawTarget reconstructs the absolute target URI of r as it appears on the
// wire (before canonicalization) and returns it with the authority the
// request was addressed to (the HTTP/1.1 Host header or HTTP/2
// :authority, which net/http exposes as r.Host).
//
// For server-side requests the request-target is r.RequestURI; for
// client-side requests it is r.URL (so a client request whose r.Host
// differs from r.URL.Host is refused by the authority check). The scheme comes from scheme when set,
// else from r.URL, else from r.TLS.
func rawTarget(r *http.Request, scheme string) (raw, host string, err error) {
	host = r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	if scheme == "" {
		switch {
		case r.URL != nil && r.URL.Scheme != "":
			scheme = r.URL.Scheme
		case r.TLS != nil:
			scheme = "https"
		default:
			scheme = "http"
		}
	}
	switch rt := r.RequestURI; {
	case rt != "" && rt[0] == '/':
		raw = scheme + "://" + host + rt
	case rt != "":
		if rt == "*" || !strings.Contains(rt, "://") {
			return "", "", malformedURI("unsupported request-target form")
		}
		raw = rt // absolute-form; its authority is checked against host
	case r.URL != nil:
		// Client-side (or in-process) request: the target is the URL,
		// the authority is Host when set, and the two must agree.
		target := r.URL.Host
		if target == "" {
			target = host
		}
		raw = scheme + "://" + target + r.URL.RequestURI()
	default:
		return "", "", malformedURI("request has no URL")
	}
	return raw, host, nil
}

// newMessage builds the canonical view of r. The canonical authority of the
// Host header must equal the authority of the canonical target URI.
func newMessage(r *http.Request, scheme string) (*message, error) {
	raw, host, err := rawTarget(r, scheme)
	if err != nil {
		return nil, err
	}
	u, err := canonicalize(raw)
	if err != nil {
		return nil, err
	}
	hostAuth, err := canonicalAuthority(u.scheme, host, false)
	if err != nil {
		return nil, err
	}
	if hostAuth != u.authority {
		return nil, malformedURI("Host authority %q does not match target URI authority %q", hostAuth, u.authority)
	}
	return &message{method: strings.ToUpper(r.Method), target: u, header: r.Header}, nil
}

// componentValue returns the signature-base value of one covered component.
func (m *message) componentValue(name string) (string, error) {
	switch name {
	case "@method":
		return m.method, nil
	case "@target-uri":
		return m.target.String(), nil
	case "@authority":
		return m.target.authority, nil
	case "@scheme":
		return m.target.scheme, nil
	case "@path":
		return m.target.path, nil
	case "@query":
		return "?" + m.target.query, nil
	}
	if name == "" || name[0] == '@' {
		return "", fmt.Errorf("unsupported component %q", name)
	}
	return fieldValue(m.header, name)
}

// fieldValue is the RFC 9421 §2.1 value of a header field: each field line
// trimmed of surrounding whitespace, joined with ", ". Content-Type is a
// singleton field and must have exactly one value.
func fieldValue(h http.Header, name string) (string, error) {
	lines := h.Values(name)
	if len(lines) == 0 {
		return "", fmt.Errorf("covered field %q is absent", name)
	}
	vals := make([]string, len(lines))
	for i, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			return "", fmt.Errorf("covered field %q contains a line break", name)
		}
		vals[i] = strings.Trim(l, " \t")
	}
	if name == "content-type" && (len(vals) > 1 || hasTopLevelComma(vals[0])) {
		return "", errors.New("Content-Type has more than one value")
	}
	return strings.Join(vals, ", "), nil
}

// hasTopLevelComma reports whether s contains a comma outside a quoted
// string, i.e. whether it is a list of values.
func hasTopLevelComma(s string) bool {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == ',':
			return true
		}
	}
	return false
}

// buildBase builds the RFC 9421 §2.5 signature base: one line per covered
// component, then the @signature-params line, joined by LF with no
// trailing newline.
func buildBase(m *message, components []string, sigParams string) (string, error) {
	var b strings.Builder
	for _, c := range components {
		v, err := m.componentValue(c)
		if err != nil {
			return "", err
		}
		b.WriteString(`"` + c + `": ` + v + "\n")
	}
	b.WriteString(`"@signature-params": ` + sigParams)
	return b.String(), nil
}

// SignatureBase returns the signature base that p covers for the outgoing
// (client-side) request r, exactly as Signer computes it: the target URI
// and authority are canonicalized and the @signature-params line is
// p.String(). Covered header fields (including Content-Digest) must
// already be set on r.
func SignatureBase(r *http.Request, p Params) (string, error) {
	m, err := newMessage(r, "")
	if err != nil {
		return "", err
	}
	return buildBase(m, p.Components, p.String())
}

// ContentDigest returns an RFC 9530 Content-Digest field value carrying the
// SHA-256 digest of body, encoded as the profile's signers encode it.
func ContentDigest(p Profile, body []byte) string {
	sum := sha256.Sum256(body)
	return "sha-256=:" + encodeBinary(sum[:], p.digestEncoding()) + ":"
}

// parseContentDigest parses Content-Digest strictly (a Dictionary without
// duplicate algorithms) and returns the known digests it carries.
func parseContentDigest(lines []string, mode binaryMode) (map[string][]byte, error) {
	d, err := parseDictionary(lines, mode)
	if err != nil {
		return nil, fmt.Errorf("Content-Digest: %w", err)
	}
	sizes := map[string]int{"sha-256": sha256.Size, "sha-512": sha512.Size}
	out := map[string][]byte{}
	for _, alg := range d.Names() {
		size, known := sizes[alg]
		if !known {
			continue // RFC 9530: unknown algorithms are ignored
		}
		m, _ := d.Get(alg)
		it, ok := m.(httpsfv.Item)
		if !ok {
			return nil, fmt.Errorf("Content-Digest %s is not an item", alg)
		}
		b, ok := it.Value.([]byte)
		if !ok || len(b) != size {
			return nil, fmt.Errorf("Content-Digest %s is not a %d-byte sequence", alg, size)
		}
		out[alg] = b
	}
	return out, nil
}

// digestMatches reports whether every known digest matches body and at
// least one is present.
func digestMatches(digests map[string][]byte, body []byte) bool {
	if len(digests) == 0 {
		return false
	}
	for alg, want := range digests {
		var got []byte
		switch alg {
		case "sha-256":
			s := sha256.Sum256(body)
			got = s[:]
		case "sha-512":
			s := sha512.Sum512(body)
			got = s[:]
		}
		if subtle.ConstantTimeCompare(got, want) != 1 {
			return false
		}
	}
	return true
}
