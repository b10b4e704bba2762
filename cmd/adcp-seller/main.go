// Command adcp-seller is the reference AdCP seller agent built on this
// library: AdCP 3.0 to 3.2 over MCP (streamable HTTP at /mcp) and A2A 0.3
// (JSON-RPC at /a2a, agent card at /.well-known/agent-card.json) on one
// store, plus /healthz, /readyz, /metrics and the webhook signing keys at
// /.well-known/jwks.json. Package seller holds its code.
//
//	go run ./cmd/adcp-seller -addr 127.0.0.1:8080 [-database-url URL] [-tokens principal=token,...] [-dev]
//
// Without -database-url (or DATABASE_URL) it keeps everything in memory
// (memstore); with it, media buys, tasks, webhook jobs and idempotent answers
// commit together in Postgres. Without -tokens it makes up a development
// token and prints it with the MCP URL. -dev allows http:// and loopback
// webhook URLs, which the compliance runner's receiver uses. `adcp-seller
// -h` lists every flag, with examples (usage.go); ops.go has the
// listeners, the logs and the shutdown.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
)

func main() {
	if err := run(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h printed the usage
		}
		fmt.Fprintln(os.Stderr, "adcp-seller:", err)
		os.Exit(1)
	}
}

func run() error {
	o, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	log := newLogger(os.Stderr, o.logFormat, o.logLevel)
	slog.SetDefault(log)
	logStorage(log, o)

	tokenMap, devToken, err := parseTokens(o.tokens)
	if err != nil {
		return err
	}
	sealer, madeUp, err := keyRing(o.keys, o.dev)
	if err != nil {
		return err
	}
	tel, err := seller.NewTelemetry()
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	signer, err := webhookSigner(o.signingKey, o.dev)
	if err != nil {
		return err
	}
	accountSalt, err := secret("-account-salt", o.salt, o.dev)
	if err != nil {
		return err
	}
	cfg := seller.Config{Tokens: tokenMap, AllowLoopbackWebhooks: o.dev, Logger: log, Telemetry: tel,
		Idempotency:   &idem.Config{TTL: o.ttl, Sealer: sealer},
		WebhookSigner: signer, AccountSalt: accountSalt, TaskDelay: o.taskDelay, Sandbox: map[string]bool{}}
	for _, p := range strings.Split(o.sandbox, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Sandbox[p] = true
		}
	}
	if o.dev {
		for _, p := range tokenMap {
			cfg.Sandbox[p] = true
		}
	}
	if o.conformanceKeys {
		if !o.dev {
			return errors.New("-trust-conformance-keys requires -dev: anyone can sign with the conformance test keys")
		}
		if cfg.RequestSigning, err = seller.ConformanceSigning(); err != nil {
			return err
		}
		if !o.conformanceClock.IsZero() {
			// The runner signs with its own (shifted) clock; the verifier
			// keeps the same offset from the real one.
			offset := time.Until(o.conformanceClock)
			now := func() time.Time { return time.Now().Add(offset) }
			cfg.RequestSigning.Now = now
			if m, ok := cfg.RequestSigning.Nonces.(*httpsig.MemoryNonceStore); ok {
				m.Now = now // nonces live until their signature's expires
			}
		}
	}
	if !o.conformanceClock.IsZero() && !o.conformanceKeys {
		return errors.New("-conformance-clock requires -trust-conformance-keys: it is the clock of the conformance runner's signatures")
	}
	switch {
	case o.rate > 0:
		cfg.Idempotency.Limiter = idem.NewLimiter(idem.Limits{
			Writes: idem.Rate{PerSecond: o.rate, Burst: max(1, int(o.rate*5))},
			Reads:  idem.Rate{PerSecond: o.rate * 5, Burst: max(1, int(o.rate*25))},
		})
	default:
		cfg.Idempotency.Limiter = idem.Unlimited
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Listen first: /healthz answers and /readyz says "starting" while the
	// migrations run (they may wait for another replica's).
	srv, err := listen(log, o, tel)
	if err != nil {
		return err
	}
	if cfg.PublicURL, err = publicURL(log, o.publicURL, srv.addr()); err != nil {
		srv.close()
		return err
	}
	if o.dbURL != "" {
		pool, err := openPool(ctx, o.dbURL, tel)
		if err != nil {
			srv.close()
			return err
		}
		defer pool.Close()
		cfg.DB = pool
	}
	s, err := seller.New(ctx, cfg)
	if err != nil {
		srv.close()
		return err
	}
	s.Start()
	srv.serve(s.Handler())

	url := "http://" + srv.addr() + "/mcp"
	a2aURL := cfg.PublicURL + seller.A2APath
	log.Info("ready: serving MCP and A2A", "url", url, "a2a_url", a2aURL, "storage", s.Mode())
	fmt.Printf("adcp-seller: serving MCP at %s (storage: %s)\n", url, s.Mode())
	fmt.Printf("adcp-seller: serving A2A at %s (agent card: %s/.well-known/agent-card.json)\n", a2aURL, cfg.PublicURL)
	if o.metricsAddr != "" {
		fmt.Printf("adcp-seller: serving metrics at http://%s/metrics\n", srv.metricsAddr())
	}
	if madeUp {
		fmt.Println("adcp-seller: sealing stored answers with a key made up for this run (-dev); they will not open after a restart: set -encryption-keys to keep them")
	}
	if devToken != "" {
		fmt.Printf("adcp-seller: dev token (principal %q): %s\n", "dev", devToken)
	}

	var serveErr error
	select {
	case serveErr = <-srv.errc:
		log.Error("HTTP server failed; stopping", "error", serveErr)
	case <-ctx.Done():
		log.Info("shutting down: no new connections; finishing requests in flight", "timeout", o.shutdownTimeout.String())
	}
	stop() // a second signal stops the process at once
	// HTTP first, so that requests in flight finish with the background
	// work still running; then the seller's background work.
	srv.shutdown(log, o.shutdownTimeout)
	s.Close()
	log.Info("background work stopped")
	if err := tel.Shutdown(context.Background()); err != nil {
		log.Warn("telemetry shutdown", "error", err)
	}
	log.Info("stopped")
	return serveErr
}

// publicURL is the origin the A2A agent card advertises: -public-url, or
// http:// and the listening address, with loopback for a wildcard host
// (0.0.0.0, ::), which clients cannot reach (a warning says to set
// -public-url then).
func publicURL(log *slog.Logger, flagValue, listening string) (string, error) {
	if flagValue != "" {
		u, err := url.Parse(flagValue)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.TrimSuffix(u.Path, "/") != "" || u.RawQuery != "" {
			return "", fmt.Errorf("-public-url %q: want an http(s) origin such as https://seller.example", flagValue)
		}
		return strings.TrimSuffix(flagValue, "/"), nil
	}
	host, port, err := net.SplitHostPort(listening)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		log.Warn("the A2A agent card advertises a loopback URL while the seller listens on every interface; set -public-url to the address clients use")
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// parseTokens reads principal=token pairs; with none it makes up a token
// for the principal "dev".
func parseTokens(spec string) (map[string]string, string, error) {
	m := map[string]string{}
	for _, pair := range strings.Split(spec, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		principal, token, ok := strings.Cut(pair, "=")
		if !ok || principal == "" || token == "" {
			return nil, "", fmt.Errorf("-tokens: %q is not principal=token", pair)
		}
		if _, dup := m[token]; dup {
			return nil, "", errors.New("-tokens: a token is listed twice")
		}
		m[token] = principal
	}
	if len(m) > 0 {
		return m, "", nil
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	token := "dev_" + hex.EncodeToString(b)
	m[token] = "dev"
	return m, token, nil
}

// keyRing reads -encryption-keys (id=base64,...; the first seals). Without
// keys, -dev makes one up for the run; otherwise the seller refuses to
// start, so that no answer is ever stored in plaintext.
func keyRing(spec string, dev bool) (*idem.KeyRing, bool, error) {
	keys := map[string][]byte{}
	current := ""
	for _, pair := range strings.Split(spec, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		id, b64, ok := strings.Cut(pair, "=")
		key, err := base64.StdEncoding.DecodeString(b64)
		if !ok || id == "" || err != nil {
			return nil, false, fmt.Errorf("-encryption-keys: an entry is not id=base64(32 bytes)")
		}
		if current == "" {
			current = id
		}
		keys[id] = key
	}
	if current == "" {
		if !dev {
			return nil, false, errors.New("-encryption-keys (or ADCP_SELLER_ENCRYPTION_KEYS) is required: stored answers are sealed at rest; -dev makes up a key for one run")
		}
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		current, keys["dev"] = "dev", key
	}
	ring, err := idem.NewKeyRing(current, keys)
	if err != nil {
		return nil, false, fmt.Errorf("-encryption-keys: %w", err)
	}
	return ring, len(spec) == 0, nil
}

// webhookSigner reads -webhook-signing-key (kid=base64 of an Ed25519
// seed). Without one, -dev makes one up for the run.
func webhookSigner(spec string, dev bool) (*httpsig.Signer, error) {
	kid, b64, ok := strings.Cut(strings.TrimSpace(spec), "=")
	if spec == "" {
		if !dev {
			return nil, errors.New("-webhook-signing-key (or ADCP_SELLER_WEBHOOK_SIGNING_KEY) is required: webhooks are signed; -dev makes up a key for one run")
		}
		kid, ok = "dev-"+hex.EncodeToString(randomBytes(4)), true
		b64 = base64.StdEncoding.EncodeToString(randomBytes(ed25519.SeedSize))
	}
	seed, err := base64.StdEncoding.DecodeString(b64)
	if !ok || kid == "" || err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("-webhook-signing-key: not kid=base64(32-byte Ed25519 seed)")
	}
	return httpsig.NewSigner(httpsig.ProfileWebhook, kid, ed25519.NewKeyFromSeed(seed))
}

// secret reads a base64 secret of at least 16 bytes; without one, -dev
// makes one up for the run.
func secret(flagName, b64 string, dev bool) ([]byte, error) {
	if b64 == "" {
		if !dev {
			return nil, fmt.Errorf("%s is required; -dev makes one up for one run", flagName)
		}
		return randomBytes(32), nil
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) < 16 {
		return nil, fmt.Errorf("%s: not base64 of at least 16 bytes", flagName)
	}
	return b, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
