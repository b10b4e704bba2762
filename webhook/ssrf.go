package webhook

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrURLNotAllowed is matched by every refusal of the SSRF guard, whether
// the URL was refused as written (URLPolicy.CheckURL) or the address it
// resolved to was refused at connect time.
var ErrURLNotAllowed = errors.New("webhook: URL not allowed")

// URLError is a refusal of the SSRF guard. Reason is safe to show to the
// party that supplied the URL; neither it nor Error contain the URL.
type URLError struct {
	Reason string
}

// Error implements error.
func (e *URLError) Error() string { return "webhook: URL not allowed: " + e.Reason }

// Is matches ErrURLNotAllowed.
func (e *URLError) Is(target error) bool { return target == ErrURLNotAllowed }

func refuse(reason string) *URLError { return &URLError{Reason: reason} }

// URLPolicy is the SSRF guard for counterparty-supplied webhook URLs (AdCP
// security, "Webhook URL validation (SSRF)"). A nil or zero *URLPolicy is
// the strict production policy. It is safe for concurrent use once
// configured.
type URLPolicy struct {
	// AllowLoopback admits loopback hosts (127.0.0.0/8, ::1, "localhost")
	// over http as well as https. For development and tests only.
	// Defaults to false.
	AllowLoopback bool

	// Ports, when not empty, is the only destination ports allowed (the
	// spec's opt-in hardened mode; see HardenedPorts). Defaults to any
	// port: the protocol does not constrain ports, and buyers host
	// receivers on :9443, :4443 and the like.
	Ports []int

	// Resolver resolves host names when connecting. Defaults to
	// net.DefaultResolver.
	Resolver *net.Resolver
}

// HardenedPorts returns the destination ports the spec suggests as the
// starting point of an opt-in port allowlist: 443 and 8443.
func HardenedPorts() []int { return []int{443, 8443} }

// CheckURL reports whether raw may be fetched: an absolute https URL (http
// too for an allowed loopback host), without credentials, whose host is a
// DNS name or a public IP address, on an allowed port. A host that spells
// an IPv4 address in a form other than dotted decimal (2130706433,
// 0177.0.0.1, 0x7f.1, 127.1) is refused whatever address it denotes.
// Host names are checked again when connecting, on the addresses they
// resolve to (see Client). Errors are *URLError and match ErrURLNotAllowed.
func (p *URLPolicy) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return refuse("is not a valid URL")
	}
	if !u.IsAbs() || u.Opaque != "" || u.Host == "" {
		return refuse("must be an absolute URL with a host")
	}
	if u.User != nil {
		return refuse("must not carry credentials")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return refuse("must use https")
	}
	host := u.Hostname()
	if strings.Contains(host, "%") {
		return refuse("must not carry an IPv6 zone")
	}
	loopback := false
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := p.checkAddr(ip); err != nil {
			return err
		}
		loopback = ip.IsLoopback()
	} else {
		name := strings.ToLower(strings.TrimSuffix(host, "."))
		switch {
		case name == "" || strings.Contains(name, ".."):
			return refuse("has an empty host name label")
		case endsInNumber(name):
			return refuse("must not spell an IP address in a non-standard form")
		case name == "localhost" || strings.HasSuffix(name, ".localhost"):
			if !p.allowLoopback() {
				return refuse("must not point at a loopback, private or reserved address")
			}
			loopback = true
		}
	}
	if scheme != "https" && !(loopback && p.allowLoopback()) {
		return refuse("must use https")
	}
	port := 443
	if scheme == "http" {
		port = 80
	}
	if s := u.Port(); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return refuse("has an invalid port")
		}
		port = n
	}
	if p != nil && len(p.Ports) > 0 && !slices.Contains(p.Ports, port) {
		return refuse("port is not in the allowed set")
	}
	return nil
}

func (p *URLPolicy) allowLoopback() bool { return p != nil && p.AllowLoopback }

// endsInNumber is the WHATWG URL "ends in a number" test: the last label is
// all digits or 0x-prefixed hex, which URL parsers and resolvers
// (inet_aton) read as an IPv4 address in decimal, octal or hex.
func endsInNumber(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	if h, ok := strings.CutPrefix(last, "0x"); ok {
		return strings.Trim(h, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// The address ranges the guard refuses: the spec's list (RFC 1918, CGNAT,
// loopback, link-local with the cloud metadata address, broadcast, 0/8,
// multicast; IPv6 loopback, unique-local with fd00:ec2::254, link-local,
// IPv4-mapped, multicast) plus the other special-purpose ranges of the IANA
// registries that are never a public receiver.
var blocked = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
		"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:2::/48",
		"2001:10::/28", "2001:20::/28", "2001:db8::/32", "2002::/16", "3fff::/20",
		"fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// nat64 is the well-known NAT64 prefix: its addresses reach the IPv4
// address in their last 32 bits, which is checked instead.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// checkAddr refuses ip if it is in a blocked range, unless it is a loopback
// address and the policy allows loopback.
func (p *URLPolicy) checkAddr(ip netip.Addr) error {
	if ip.Zone() != "" {
		return refuse("must not carry an IPv6 zone")
	}
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:]))
	}
	if ip.IsLoopback() && p.allowLoopback() {
		return nil
	}
	for _, pfx := range blocked {
		if pfx.Contains(ip) {
			return refuse("must not point at a loopback, private or reserved address")
		}
	}
	return nil
}

// control is the net.Dialer hook: it runs on every address the dialer is
// about to connect to, after name resolution, so the check applies to the
// address actually used (no DNS rebinding window).
func (p *URLPolicy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return refuse("resolved to an unparsable address")
	}
	return p.checkAddr(ap.Addr().WithZone(""))
}

// Client returns an HTTP client that enforces the policy at connect time:
// every address it dials, after name resolution, must pass the same range
// check as CheckURL. It never uses a proxy (the proxy's address would be the
// one checked), never follows a redirect (a 3xx is returned as the
// response), and gives up on a request after timeout (zero means 10
// seconds). It does not check URLs as written: call CheckURL first.
func (p *URLPolicy) Client(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var resolver *net.Resolver
	if p != nil {
		resolver = p.Resolver
	}
	dialer := &net.Dialer{Timeout: min(timeout, 10*time.Second), KeepAlive: 30 * time.Second, Resolver: resolver, Control: p.control}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			ForceAttemptHTTP2:   true,
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: min(timeout, 10*time.Second),
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
