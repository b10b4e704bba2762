package webhook

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckURLRefuses(t *testing.T) {
	const token = "tok_SECRET_9f8e7d"
	strict := &URLPolicy{}
	for _, raw := range []string{
		// not https, not absolute, credentials
		"http://buyer.example/" + token,
		"ftp://buyer.example/" + token,
		"file:///etc/passwd",
		"//buyer.example/" + token,
		"/relative/" + token,
		"https:opaque:" + token,
		"https://user:pass@buyer.example/" + token,
		"https://" + token + "@buyer.example/",
		"https:///" + token,
		"not a url\x7f",
		// loopback in every spelling
		"https://127.0.0.1/" + token,
		"https://127.1.2.3:8443/" + token,
		"https://localhost/" + token,
		"https://LOCALHOST./" + token,
		"https://api.localhost/" + token,
		"https://2130706433/" + token,   // decimal 127.0.0.1
		"https://017700000001/" + token, // octal 127.0.0.1
		"https://0177.0.0.1/" + token,   // octal octet
		"https://0x7f.0.0.1/" + token,   // hex octet
		"https://0x7f000001/" + token,   // hex
		"https://127.1/" + token,        // short form
		"https://127.0.0.1./" + token,   // trailing dot
		"https://[::1]/" + token,        // IPv6 loopback
		"https://[::ffff:127.0.0.1]/" + token,
		"https://[::ffff:7f00:1]/" + token, // mapped, hex spelling
		"https://[::127.0.0.1]/" + token,   // IPv4-compatible
		"https://[0:0:0:0:0:0:0:1]/" + token,
		// private, CGNAT, link-local, metadata, multicast, broadcast, unspecified
		"https://10.0.0.1/" + token,
		"https://172.16.5.4/" + token,
		"https://172.31.255.255/" + token,
		"https://192.168.1.1/" + token,
		"https://100.64.0.1/" + token,
		"https://169.254.169.254/latest/meta-data/" + token,
		"https://224.0.0.1/" + token,
		"https://239.255.255.250/" + token,
		"https://255.255.255.255/" + token,
		"https://0.0.0.0/" + token,
		"https://0/" + token,
		"https://[::]/" + token,
		"https://[fc00::1]/" + token,
		"https://[fd00:ec2::254]/" + token,
		"https://[fe80::1]/" + token,
		"https://[fe80::1%25eth0]/" + token,
		"https://[ff02::1]/" + token,
		"https://[::ffff:10.0.0.1]/" + token,
		"https://[::ffff:169.254.169.254]/" + token,
		"https://[::ffff:8.8.8.8]/" + token,     // IPv4-mapped is refused whatever it maps
		"https://[64:ff9b::a9fe:a9fe]/" + token, // NAT64 of 169.254.169.254
		"https://[2002:7f00:1::]/" + token,      // 6to4 of 127.0.0.1
		"https://192.0.2.10/" + token,           // documentation
		"https://198.18.0.1/" + token,           // benchmarking
		// malformed hosts and ports
		"https://buyer..example/" + token,
		"https://buyer.example:0/" + token,
		"https://buyer.example:70000/" + token,
	} {
		err := strict.CheckURL(raw)
		if !errors.Is(err, ErrURLNotAllowed) {
			t.Errorf("CheckURL(%q) = %v, want a refusal", raw, err)
			continue
		}
		if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "buyer.example") {
			t.Errorf("CheckURL(%q): error %q echoes the URL", raw, err)
		}
	}
}

func TestCheckURLAccepts(t *testing.T) {
	for _, raw := range []string{
		"https://buyer.example/adcp/webhook/create_media_buy/agent_1/route_abc?x=1",
		"https://buyer.example:9443/hooks", // non-standard ports are fine by default
		"https://buyer.example:4443/hooks",
		"https://8.8.8.8/hooks",
		"https://[2001:4860:4860::8888]/hooks",
		"https://[64:ff9b::808:808]/hooks", // NAT64 of a public address
		"https://xn--bcher-kva.example/",
		"HTTPS://Buyer.Example./h",
		"https://1e100.net/",
	} {
		if err := (&URLPolicy{}).CheckURL(raw); err != nil {
			t.Errorf("CheckURL(%q) = %v", raw, err)
		}
	}
	var nilPolicy *URLPolicy
	if err := nilPolicy.CheckURL("https://buyer.example/"); err != nil {
		t.Errorf("nil policy: %v", err)
	}
}

func TestCheckURLLoopbackAndPorts(t *testing.T) {
	dev := &URLPolicy{AllowLoopback: true}
	for _, raw := range []string{"http://127.0.0.1:8080/h", "http://localhost:1/h", "https://[::1]:9/h", "http://127.9.9.9/h"} {
		if err := dev.CheckURL(raw); err != nil {
			t.Errorf("dev CheckURL(%q) = %v", raw, err)
		}
	}
	for _, raw := range []string{"http://buyer.example/h", "http://10.0.0.1/h", "https://169.254.169.254/", "http://0.0.0.0:80/", "http://2130706433/"} {
		if err := dev.CheckURL(raw); err == nil {
			t.Errorf("dev CheckURL(%q) accepted", raw)
		}
	}
	hardened := &URLPolicy{Ports: HardenedPorts()}
	for raw, ok := range map[string]bool{
		"https://buyer.example/h": true, "https://buyer.example:443/h": true, "https://buyer.example:8443/h": true,
		"https://buyer.example:9443/h": false, "https://buyer.example:22/h": false,
	} {
		if err := hardened.CheckURL(raw); (err == nil) != ok {
			t.Errorf("hardened CheckURL(%q) = %v", raw, err)
		}
	}
}

// The connect-time check, on the address the dialer is about to use.
func TestControl(t *testing.T) {
	strict, dev := &URLPolicy{}, &URLPolicy{AllowLoopback: true}
	for addr, want := range map[string][2]bool{ // strict, dev
		"93.184.216.34:443":        {true, true},
		"[2606:2800:220:1::1]:443": {true, true},
		"127.0.0.1:443":            {false, true},
		"[::1]:443":                {false, true},
		"10.1.1.1:443":             {false, false},
		"169.254.169.254:80":       {false, false},
		"0.0.0.0:443":              {false, false},
		"[::ffff:192.168.0.1]:443": {false, false},
		"[fe80::1%eth0]:443":       {false, false},
		"[fd00:ec2::254]:80":       {false, false},
		"not-an-address":           {false, false},
	} {
		if got := strict.control("tcp", addr, nil) == nil; got != want[0] {
			t.Errorf("strict control(%s) allowed=%v", addr, got)
		}
		if got := dev.control("tcp", addr, nil) == nil; got != want[1] {
			t.Errorf("dev control(%s) allowed=%v", addr, got)
		}
	}
}

// fakeDNS is a resolver whose every A query answers ip: a host name that
// passes CheckURL but resolves to a refused address, as after a DNS
// rebinding. It speaks DNS over an in-memory stream, so no socket is used.
func fakeDNS(ip netip.Addr) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		client, server := net.Pipe()
		go serveDNS(server, ip)
		return client, nil
	}}
}

func serveDNS(c net.Conn, ip netip.Addr) {
	defer c.Close()
	for {
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		q := make([]byte, n)
		if _, err := io.ReadFull(c, q); err != nil || len(q) < 12 {
			return
		}
		end := 12
		for end < len(q) && q[end] != 0 {
			end += int(q[end]) + 1
		}
		end += 5 // the root label, QTYPE, QCLASS
		if end > len(q) {
			return
		}
		qtype := binary.BigEndian.Uint16(q[end-4:])
		resp := append([]byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}, q[12:end]...)
		if qtype == 1 && ip.Is4() {
			resp[7] = 1
			a := ip.As4()
			resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
			resp = append(resp, a[:]...)
		}
		if err := binary.Write(c, binary.BigEndian, uint16(len(resp))); err != nil {
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// A host name that resolves to 127.0.0.1 passes the URL check, and is
// refused when connecting: the listener on 127.0.0.1 never sees a
// connection. With loopback allowed, the same name does connect, which
// shows the fake resolver is what the dialer used.
func TestDialTimeRefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("https://rebind.example:%d/hooks/tok_SECRET", port)
	d := Delivery{URL: url, IdempotencyKey: "whk_0123456789abcdef", Body: []byte(`{}`)}

	strict := &URLPolicy{Resolver: fakeDNS(netip.MustParseAddr("127.0.0.1"))}
	if err := strict.CheckURL(url); err != nil {
		t.Fatalf("the name itself passes the URL check: %v", err)
	}
	s, err := NewSender(&SenderConfig{URLs: strict, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(context.Background(), d)
	if !errors.Is(err, ErrURLNotAllowed) || !IsPermanent(err) {
		t.Fatalf("Send = %v, want a permanent refusal at connect time", err)
	}
	if strings.Contains(err.Error(), "rebind.example") || strings.Contains(err.Error(), "tok_SECRET") {
		t.Errorf("error %q echoes the URL", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the refused address got %d connections", n)
	}

	dev := &URLPolicy{AllowLoopback: true, Resolver: fakeDNS(netip.MustParseAddr("127.0.0.1"))}
	s, err = NewSender(&SenderConfig{URLs: dev, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(context.Background(), d); err == nil || errors.Is(err, ErrURLNotAllowed) {
		t.Fatalf("dev Send = %v, want a TLS failure after connecting", err)
	}
	if accepted.Load() == 0 {
		t.Fatal("with loopback allowed the name did not connect: the fake resolver was not used")
	}
}
