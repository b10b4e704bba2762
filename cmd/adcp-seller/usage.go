package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// options are the command's flags, after the environment filled in the
// ones not given.
type options struct {
	addr, metricsAddr string
	publicURL         string
	dbURL             string
	dbFromEnv         bool // DATABASE_URL chose Postgres mode, not -database-url
	tokens, keys      string
	signingKey, salt  string
	sandbox           string
	dev               bool
	conformanceKeys   bool
	conformanceClock  time.Time
	taskDelay         time.Duration
	ttl               time.Duration
	rate              float64
	shutdownTimeout   time.Duration
	logFormat         string
	logLevel          slog.Level
}

const description = `adcp-seller is the reference AdCP seller agent of github.com/adcp-go/idempotency:
an AdCP 3 media-buy seller over MCP (streamable HTTP at /mcp) and A2A 0.3
(JSON-RPC at /a2a), one store behind both, whose mutating tools run at most
once per idempotency key, as AdCP requires: a key first used over MCP
replays over A2A, and the other way round.

It speaks AdCP 3.0 to 3.2 (a request's adcp_version picks the release):
get_adcp_capabilities, get_products, list_creative_formats, list_accounts,
list_creatives, create_media_buy (synchronous, or submitted with a task and a
webhook), update_media_buy, get_media_buys, get_task_status and, for sandbox
principals, comply_test_controller. Webhooks are signed (RFC 9421); their
key is published at /.well-known/jwks.json.

Storage is in memory (everything is lost at exit) unless -database-url or
DATABASE_URL names a Postgres database: then media buys, tasks, webhook jobs
(River) and idempotent answers commit together, and migrations run at
start-up.

Endpoints: /mcp (bearer token), /a2a (A2A JSON-RPC, the same tokens; its
agent card, public, at /.well-known/agent-card.json and
/a2a/.well-known/agent-card.json, advertises -public-url + /a2a),
/healthz (the process is alive), /readyz
(ready for traffic: started, and in Postgres mode the database answers),
/metrics (Prometheus; on -metrics-addr when set). Logs are structured
(log/slog) on stderr, one line per request; SIGINT or SIGTERM stops taking
connections, finishes the requests in flight (up to -shutdown-timeout), then
stops River's workers and the sweeper.

Usage:

  adcp-seller [flags]

Flags:

`

const environment = `
Environment: DATABASE_URL, ADCP_SELLER_TOKENS, ADCP_SELLER_ENCRYPTION_KEYS,
ADCP_SELLER_WEBHOOK_SIGNING_KEY, ADCP_SELLER_ACCOUNT_SALT and
ADCP_SELLER_SANDBOX stand in for -database-url, -tokens, -encryption-keys,
-webhook-signing-key, -account-salt and -sandbox when those are not given
(give -database-url= to stay in memory while DATABASE_URL is set).

Examples:

  # In memory, to try it: a dev token and a dev sealing key are made up and printed.
  adcp-seller -dev

  # Postgres, durable, with fixed tokens and secrets (the same on every replica),
  # behind a TLS proxy that clients reach as https://seller.example.
  adcp-seller -addr 0.0.0.0:8080 -public-url https://seller.example \
    -database-url 'postgres://seller:PASSWORD@db.internal:5432/seller' \
    -tokens 'buyer-a=sk_live_...' -encryption-keys "k1=$(head -c 32 /dev/urandom | base64)" \
    -webhook-signing-key "wh1=$(head -c 32 /dev/urandom | base64)" \
    -account-salt "$(head -c 32 /dev/urandom | base64)"

  # Metrics on their own loopback port, JSON logs, 30 s to drain at shutdown.
  adcp-seller -dev -metrics-addr :9464 -log-format json -shutdown-timeout 30s
  curl -s 127.0.0.1:9464/metrics | grep idempotency_calls_total

  # The A2A agent card (public), then a skill over A2A with the dev token.
  curl -s 127.0.0.1:8080/.well-known/agent-card.json
  curl -s 127.0.0.1:8080/a2a -H 'Authorization: Bearer TOKEN' -H 'Content-Type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"kind":"message",
    "messageId":"m1","role":"user","parts":[{"kind":"data","data":{"skill":"get_adcp_capabilities","input":{}}}]}}}'
`

// parseFlags parses args; getenv fills in the flags that stand for an
// environment variable and were not given. Usage and flag errors go to
// out; after -h it returns flag.ErrHelp.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("adcp-seller", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address for MCP, A2A, /healthz, /readyz and (without -metrics-addr) /metrics; port 0 picks a free one")
	fs.StringVar(&o.publicURL, "public-url", "", "the origin clients reach the seller at (https://seller.example), which the A2A agent card advertises; empty means http:// and -addr's address (loopback for a wildcard host)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve /metrics on this address instead of -addr's; a missing host means loopback (\":9464\" is 127.0.0.1:9464)")
	fs.StringVar(&o.dbURL, "database-url", "", "Postgres URL (postgres://user:password@host:port/db); empty keeps everything in memory (env DATABASE_URL)")
	fs.StringVar(&o.tokens, "tokens", "", "accepted bearer tokens as principal=token,... (env ADCP_SELLER_TOKENS); empty makes up a dev token")
	fs.BoolVar(&o.dev, "dev", false, "development mode: allow http:// and loopback webhook URLs, make up a sealing key if none is given")
	fs.DurationVar(&o.ttl, "replay-ttl", 24*time.Hour, "idempotency replay window (1h to 168h)")
	fs.StringVar(&o.keys, "encryption-keys", "", "keys that seal stored answers at rest, as id=base64(32 bytes),... the first sealing new answers, the others opening old ones (env ADCP_SELLER_ENCRYPTION_KEYS); -dev makes one up")
	fs.StringVar(&o.signingKey, "webhook-signing-key", "", "the Ed25519 key that signs webhooks, as kid=base64(32-byte seed) (env ADCP_SELLER_WEBHOOK_SIGNING_KEY); its public key is served at /.well-known/jwks.json; -dev makes one up")
	fs.StringVar(&o.salt, "account-salt", "", "base64 of 16+ secret bytes that scope AdCP 3.1+ keys by account, the same on every replica (env ADCP_SELLER_ACCOUNT_SALT); -dev makes one up")
	fs.StringVar(&o.sandbox, "sandbox", "", "principals that may use comply_test_controller, comma-separated (env ADCP_SELLER_SANDBOX); -dev makes every principal a sandbox one")
	fs.DurationVar(&o.taskDelay, "task-delay", 2*time.Second, "how long a submitted create_media_buy takes to complete")
	fs.BoolVar(&o.conformanceKeys, "trust-conformance-keys", false, "sandbox only, requires -dev: trust the AdCP conformance runner's PUBLIC test keys (their private halves are published with the spec) as signer \"adcp-conformance-runner\" and serve the signature grading endpoint under /mcp/adcp/; never in production")
	fs.TextVar(&o.conformanceClock, "conformance-clock", time.Time{}, "sandbox only, requires -trust-conformance-keys: the signature verifier's clock starts at this `RFC3339 time` and ticks from there, for a conformance runner run on a shifted clock (make assessment runs it at 2026-04-15, see docs/COMPLIANCE.md); the rest of the seller keeps the real clock")
	fs.Float64Var(&o.rate, "insert-rate", 60, "new write keys per second per principal and account (bursts of 5x; reads get 5x the rate); 0 disables the limit")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "at SIGINT or SIGTERM, how long requests in flight may take to finish before their connections are closed")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "lowest `level` logged: debug (adds successful /healthz and /readyz probes), info, warn or error")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), description)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), environment)
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, e := range []struct {
		flag, env string
		v         *string
	}{
		{"database-url", "DATABASE_URL", &o.dbURL},
		{"tokens", "ADCP_SELLER_TOKENS", &o.tokens},
		{"encryption-keys", "ADCP_SELLER_ENCRYPTION_KEYS", &o.keys},
		{"webhook-signing-key", "ADCP_SELLER_WEBHOOK_SIGNING_KEY", &o.signingKey},
		{"account-salt", "ADCP_SELLER_ACCOUNT_SALT", &o.salt},
		{"sandbox", "ADCP_SELLER_SANDBOX", &o.sandbox},
	} {
		if !set[e.flag] {
			*e.v = getenv(e.env)
		}
	}
	o.dbFromEnv = !set["database-url"] && o.dbURL != ""
	switch o.logFormat {
	case "text", "json":
	default:
		return o, fmt.Errorf("-log-format %q: want text or json", o.logFormat)
	}
	if o.shutdownTimeout <= 0 {
		return o, fmt.Errorf("-shutdown-timeout %v: want a positive duration", o.shutdownTimeout)
	}
	return o, nil
}
