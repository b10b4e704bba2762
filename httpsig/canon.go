package httpsig

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// canonURL is a target URI after AdCP canonicalization.
type canonURL struct {
	scheme    string // "http" or "https"
	authority string // host[:port], default port removed
	path      string // never empty
	query     string // without '?'
	hasQuery  bool   // a '?' was present, possibly with an empty query
}

func (u canonURL) String() string {
	s := u.scheme + "://" + u.authority + u.path
	if u.hasQuery {
		s += "?" + u.query
	}
	return s
}

func malformedURI(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrTargetURIMalformed}, args...)...)
}

// CanonicalTargetURI applies the AdCP @target-uri canonicalization to an
// absolute http or https URL and returns the @target-uri and @authority
// component values:
//
//  1. the scheme is lower-cased;
//  2. the host is lower-cased, an IDN U-label is converted to its A-label,
//     exactly one trailing root dot is removed (empty DNS labels are
//     rejected), IPv6 literals keep their brackets and have their hex
//     digits lower-cased (zone identifiers are rejected);
//  3. userinfo is removed; an authority without a host is rejected;
//  4. the scheme's default port (443, 80) is removed;
//  5. dot segments are removed (RFC 3986 §5.2.4) on the still-encoded
//     path, consecutive slashes are preserved, an empty path becomes "/";
//  6. percent-encodings in the path are normalized: unreserved characters
//     are decoded, every other %XX gets upper-case hex digits;
//  7. the query is preserved byte for byte (a bare "?" included);
//  8. the fragment is removed.
//
// Errors match ErrTargetURIMalformed.
func CanonicalTargetURI(rawURL string) (targetURI, authority string, err error) {
	u, err := canonicalize(rawURL)
	if err != nil {
		return "", "", err
	}
	return u.String(), u.authority, nil
}

func canonicalize(raw string) (canonURL, error) {
	var u canonURL
	colon := strings.IndexByte(raw, ':')
	if colon <= 0 {
		return u, malformedURI("missing scheme")
	}
	scheme := raw[:colon]
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		if !(isAlpha(c) || (i > 0 && (isDigit(c) || c == '+' || c == '-' || c == '.'))) {
			return u, malformedURI("invalid scheme")
		}
	}
	u.scheme = strings.ToLower(scheme)
	if u.scheme != "https" && u.scheme != "http" {
		return u, malformedURI("scheme %q is not http or https", u.scheme)
	}
	rest := raw[colon+1:]
	if !strings.HasPrefix(rest, "//") {
		return u, malformedURI("URL has no authority")
	}
	rest = rest[2:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	rest = rest[end:]
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i] // step 8
	}
	path := rest
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		path, u.query, u.hasQuery = rest[:i], rest[i+1:], true
	}

	var err error
	if u.authority, err = canonicalAuthority(u.scheme, auth, true); err != nil {
		return u, err
	}
	if err := checkTargetBytes(path); err != nil {
		return u, err
	}
	if err := checkTargetBytes(u.query); err != nil {
		return u, err
	}
	if path == "" {
		path = "/"
	}
	if u.path, err = normalizePercent(removeDotSegments(path)); err != nil {
		return u, err
	}
	return u, nil
}

// checkTargetBytes rejects bytes that cannot occur in an HTTP request
// target. Everything else is preserved (the path modulo percent
// normalization, the query verbatim).
func checkTargetBytes(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return malformedURI("byte 0x%02x in request target", c)
		}
	}
	return nil
}

// canonicalAuthority canonicalizes an authority (host[:port], optionally
// with userinfo) for the given scheme.
func canonicalAuthority(scheme, auth string, allowUserinfo bool) (string, error) {
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		if !allowUserinfo {
			return "", malformedURI("userinfo in Host")
		}
		auth = auth[at+1:] // step 3
	}
	if auth == "" {
		return "", malformedURI("empty authority")
	}
	var host, port string
	if auth[0] == '[' {
		end := strings.IndexByte(auth, ']')
		if end < 0 {
			return "", malformedURI("IPv6 literal missing closing bracket")
		}
		lit := auth[1:end]
		if strings.IndexByte(lit, '%') >= 0 {
			return "", malformedURI("IPv6 zone identifier")
		}
		addr, err := netip.ParseAddr(lit)
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", malformedURI("invalid IPv6 literal")
		}
		host = "[" + strings.ToLower(lit) + "]"
		switch after := auth[end+1:]; {
		case after == "":
		case after[0] == ':':
			port = after[1:]
		default:
			return "", malformedURI("junk after IPv6 literal")
		}
	} else {
		if strings.Count(auth, ":") > 1 {
			return "", malformedURI("IPv6 literal not bracketed")
		}
		host = auth
		if i := strings.IndexByte(auth, ':'); i >= 0 {
			host, port = auth[:i], auth[i+1:]
		}
		var err error
		if host, err = canonicalHost(host); err != nil {
			return "", err
		}
	}
	if port != "" {
		if len(port) > 5 {
			return "", malformedURI("invalid port")
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strings.IndexFunc(port, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
			return "", malformedURI("invalid port")
		}
		port = strconv.Itoa(n)
		if (scheme == "https" && n == 443) || (scheme == "http" && n == 80) {
			port = "" // step 4
		}
	}
	if port != "" {
		return host + ":" + port, nil
	}
	return host, nil
}

// canonicalHost canonicalizes a registered name or IPv4 address (step 2).
func canonicalHost(host string) (string, error) {
	if host == "" {
		return "", malformedURI("authority missing host")
	}
	ascii := true
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if !ascii {
		// UTS-46 maps the ideographic full stops to '.'.
		host = strings.NewReplacer("\u3002", ".", "\uff0e", ".", "\uff61", ".").Replace(host)
	}
	host = strings.TrimSuffix(host, ".") // exactly one root-label dot
	labels := strings.Split(host, ".")
	total := 0
	for i, l := range labels {
		if l == "" {
			return "", malformedURI("empty DNS label in host")
		}
		if !isASCII(l) {
			a, err := idnaLabelToASCII(l)
			if err != nil {
				return "", malformedURI("%v", err)
			}
			l = a
		} else {
			l = strings.ToLower(l)
			for j := 0; j < len(l); j++ {
				c := l[j]
				if !isLCAlpha(c) && !isDigit(c) && c != '-' && c != '_' {
					return "", malformedURI("character %q not permitted in host", c)
				}
			}
		}
		if len(l) > 63 {
			return "", malformedURI("DNS label longer than 63 octets")
		}
		labels[i] = l
		total += len(l) + 1
	}
	if total-1 > 253 {
		return "", malformedURI("host name longer than 253 octets")
	}
	return strings.Join(labels, "."), nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// removeDotSegments is RFC 3986 §5.2.4. It runs on the encoded path, so
// %2E and %2F are ordinary characters to it.
func removeDotSegments(in string) string {
	var out strings.Builder
	popLast := func() {
		s := out.String()
		i := strings.LastIndexByte(s, '/')
		if i < 0 {
			i = 0
		}
		out.Reset()
		out.WriteString(s[:i])
	}
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			popLast()
		case in == "/..":
			in = "/"
			popLast()
		case in == "." || in == "..":
			in = ""
		default:
			start := 0
			if in[0] == '/' {
				start = 1
			}
			j := strings.IndexByte(in[start:], '/')
			if j < 0 {
				j = len(in)
			} else {
				j += start
			}
			out.WriteString(in[:j])
			in = in[j:]
		}
	}
	return out.String()
}

// normalizePercent decodes percent-encoded unreserved characters and
// upper-cases the hex digits of all other percent-encodings (step 6).
func normalizePercent(path string) (string, error) {
	if strings.IndexByte(path, '%') < 0 {
		return path, nil
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
			return "", malformedURI("invalid percent-encoding in path")
		}
		v := unhex(path[i+1])<<4 | unhex(path[i+2])
		if isUnreserved(v) {
			b.WriteByte(v)
		} else {
			const hexUpper = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hexUpper[v>>4])
			b.WriteByte(hexUpper[v&15])
		}
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case isDigit(c):
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func isUnreserved(c byte) bool {
	return isAlpha(c) || isDigit(c) || c == '-' || c == '.' || c == '_' || c == '~'
}

var errNonASCIIAuthority = errors.New("non-ASCII bytes in request authority or target; IDN hosts must be sent as A-labels")
