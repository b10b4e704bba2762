package webhook

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzCheckURL: the guard never panics, refuses only with ErrURLNotAllowed,
// and what it accepts is an https URL without credentials whose IP host,
// if it has one, is a public address.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://buyer.example/h", "https://127.0.0.1/", "https://[::ffff:10.0.0.1]/", "https://2130706433/",
		"https://0x7f.1/", "http://localhost/", "https://u:p@x.example/", "https://[fe80::1%25en0]/",
		"https://[64:ff9b::a9fe:a9fe]/", "https://8.8.8.8:8443/", "https://xn--nxasmq6b.example./",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := (&URLPolicy{}).CheckURL(raw)
		if err != nil {
			if !errors.Is(err, ErrURLNotAllowed) {
				t.Fatalf("CheckURL(%q) = %v, not ErrURLNotAllowed", raw, err)
			}
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil || !strings.EqualFold(u.Scheme, "https") || u.User != nil || u.Host == "" {
			t.Fatalf("CheckURL accepted %q", raw)
		}
		if ip, perr := netip.ParseAddr(u.Hostname()); perr == nil {
			ip = ip.Unmap()
			if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() || ip.Zone() != "" {
				t.Fatalf("CheckURL accepted %q, host %v", raw, ip)
			}
		}
	})
}
