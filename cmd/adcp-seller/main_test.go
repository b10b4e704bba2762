package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
)

const secretDSN = "postgres://seller:hunter2-secret@db.internal:6543/sellerdb"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// The environment stands in for the flags not given; -database-url= keeps
// memory mode; whether DATABASE_URL chose Postgres is known.
func TestParseFlagsEnvironment(t *testing.T) {
	e := env(map[string]string{"DATABASE_URL": secretDSN, "ADCP_SELLER_TOKENS": "a=tok_1234567890", "ADCP_SELLER_ENCRYPTION_KEYS": "k=abc"})
	for _, tc := range []struct {
		args      []string
		dbURL     string
		fromEnv   bool
		tokens    string
		wantError bool
	}{
		{nil, secretDSN, true, "a=tok_1234567890", false},
		{[]string{"-database-url="}, "", false, "a=tok_1234567890", false},
		{[]string{"-database-url", "postgres://x@h/db", "-tokens", "b=t"}, "postgres://x@h/db", false, "b=t", false},
		{[]string{"-log-format", "xml"}, "", false, "", true},
		{[]string{"-shutdown-timeout", "0s"}, "", false, "", true},
		{[]string{"extra"}, "", false, "", true},
	} {
		o, err := parseFlags(tc.args, e, io.Discard)
		if tc.wantError {
			if err == nil {
				t.Errorf("%q: no error", tc.args)
			}
			continue
		}
		if err != nil || o.dbURL != tc.dbURL || o.dbFromEnv != tc.fromEnv || o.tokens != tc.tokens || o.keys != "k=abc" {
			t.Errorf("%q: %+v, %v", tc.args, o, err)
		}
	}
}

// -h describes the seller, lists every flag, gives three examples, and
// shows no value from the environment.
func TestUsage(t *testing.T) {
	var out bytes.Buffer
	_, err := parseFlags([]string{"-h"}, env(map[string]string{"DATABASE_URL": secretDSN, "ADCP_SELLER_TOKENS": "a=tok_1234567890"}), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	text := out.String()
	for _, want := range []string{"reference AdCP seller", "-addr", "-metrics-addr", "-database-url", "-tokens", "-dev", "-replay-ttl",
		"-encryption-keys", "-insert-rate", "-shutdown-timeout", "-log-format", "-log-level", "-public-url", "/a2a", "agent-card.json", "Examples:"} {
		if !strings.Contains(text, want) {
			t.Errorf("-h lacks %q", want)
		}
	}
	if n := strings.Count(text, "\n  adcp-seller -"); n != 3 {
		t.Errorf("-h has %d example invocations, want 3", n)
	}
	for _, secret := range []string{"hunter2", "tok_1234567890"} {
		if strings.Contains(text, secret) {
			t.Errorf("-h shows %q", secret)
		}
	}
}

// The storage line names the mode, the host and database, and where the
// URL came from, never the password.
func TestLogStorage(t *testing.T) {
	for _, tc := range []struct {
		o    options
		want []string
	}{
		{options{}, []string{"level=WARN", "storage: memory", "lost when the process exits"}},
		{options{dbURL: secretDSN, dbFromEnv: true}, []string{"storage: Postgres", "host=db.internal", "port=6543", "database=sellerdb", "user=seller", "from=DATABASE_URL", "chosen by DATABASE_URL"}},
		{options{dbURL: secretDSN}, []string{"storage: Postgres", "from=-database-url"}},
	} {
		var out bytes.Buffer
		logStorage(slog.New(slog.NewTextHandler(&out, nil)), tc.o)
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%+v: the log lacks %q:\n%s", tc.o, w, out.String())
			}
		}
		if strings.Contains(out.String(), "hunter2") {
			t.Errorf("the log shows the password:\n%s", out.String())
		}
	}
}

func TestLoopbackByDefault(t *testing.T) {
	for in, want := range map[string]string{"9464": "127.0.0.1:9464", ":9464": "127.0.0.1:9464", "0.0.0.0:9464": "0.0.0.0:9464", "[::1]:0": "[::1]:0"} {
		if got, err := loopbackByDefault(in); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := loopbackByDefault("no-port"); err == nil {
		t.Error("no-port: no error")
	}
}

// The agent card's origin: -public-url as given (without a trailing
// slash), else http:// and the listening address, loopback for a wildcard
// host (with a warning); anything but an http(s) origin is refused.
func TestPublicURL(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, c := range []struct{ flag, listening, want string }{
		{"", "127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"", "[::1]:9000", "http://[::1]:9000"},
		{"", "0.0.0.0:8080", "http://127.0.0.1:8080"},
		{"", "[::]:8080", "http://127.0.0.1:8080"},
		{"https://seller.example/", "0.0.0.0:8080", "https://seller.example"},
		{"http://10.0.0.5:8080", "0.0.0.0:8080", "http://10.0.0.5:8080"},
	} {
		if got, err := publicURL(log, c.flag, c.listening); err != nil || got != c.want {
			t.Errorf("publicURL(%q, %q) = %q, %v; want %q", c.flag, c.listening, got, err, c.want)
		}
	}
	if n := strings.Count(logs.String(), "set -public-url"); n != 2 {
		t.Errorf("%d warnings for the two wildcard addresses without -public-url, want 2: %s", n, logs.String())
	}
	for _, bad := range []string{"seller.example", "ftp://seller.example", "https://seller.example/a2a", "https://seller.example?x=1", "https://"} {
		if _, err := publicURL(log, bad, "127.0.0.1:8080"); err == nil {
			t.Errorf("-public-url %q accepted", bad)
		}
	}
}
