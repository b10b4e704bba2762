// Command adcp-seller is the reference AdCP seller agent built on this
// library: MCP over streamable HTTP at /mcp, with get_adcp_capabilities,
// create_media_buy, get_media_buys and comply_test_controller.
//
//	go run ./cmd/adcp-seller -addr 127.0.0.1:8080 [-database-url URL] [-tokens principal=token,...] [-dev]
//
// Without -database-url it keeps everything in memory (memstore); with it,
// media buys, webhook events and idempotent answers commit together in
// Postgres. Without -tokens it makes up a development token and prints it
// with the MCP URL. -dev allows http:// and loopback webhook URLs, which the
// compliance runner's receiver uses. Signed requests (RFC 9421) are always
// verified; -dev -trust-conformance-keys also trusts the AdCP conformance
// test keys, for the runner's signed_requests storyboard only.
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
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "adcp-seller:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address (host:port; port 0 picks a free one)")
	dbURL := flag.String("database-url", os.Getenv("DATABASE_URL"), "Postgres URL; empty keeps everything in memory (env DATABASE_URL)")
	tokens := flag.String("tokens", os.Getenv("ADCP_SELLER_TOKENS"), "accepted bearer tokens as principal=token,... (env ADCP_SELLER_TOKENS); empty makes up a dev token")
	dev := flag.Bool("dev", false, "development mode: allow http:// and loopback webhook URLs")
	ttl := flag.Duration("replay-ttl", 24*time.Hour, "idempotency replay window (1h to 168h)")
	keys := flag.String("encryption-keys", os.Getenv("ADCP_SELLER_ENCRYPTION_KEYS"), "keys that seal stored answers at rest, as id=base64(32 bytes),... the first sealing new answers, the others opening old ones (env ADCP_SELLER_ENCRYPTION_KEYS); -dev makes one up")
	signingKey := flag.String("webhook-signing-key", os.Getenv("ADCP_SELLER_WEBHOOK_SIGNING_KEY"), "the Ed25519 key that signs webhooks, as kid=base64(32-byte seed) (env ADCP_SELLER_WEBHOOK_SIGNING_KEY); its public key is served at /.well-known/jwks.json; -dev makes one up")
	salt := flag.String("account-salt", os.Getenv("ADCP_SELLER_ACCOUNT_SALT"), "base64 of 16+ secret bytes that scope AdCP 3.1+ keys by account, the same on every replica (env ADCP_SELLER_ACCOUNT_SALT); -dev makes one up")
	sandbox := flag.String("sandbox", os.Getenv("ADCP_SELLER_SANDBOX"), "principals that may use comply_test_controller, comma-separated (env ADCP_SELLER_SANDBOX); -dev makes every principal a sandbox one")
	taskDelay := flag.Duration("task-delay", 2*time.Second, "how long a submitted create_media_buy takes to complete")
	conformanceKeys := flag.Bool("trust-conformance-keys", false, "sandbox only, requires -dev: trust the AdCP conformance runner's PUBLIC test keys (their private halves are published with the spec) as signer \""+seller.ConformancePrincipal+"\" and serve the signature grading endpoint under /mcp/adcp/; never in production")
	rate := flag.Float64("insert-rate", 60, "new write keys per second per principal and account (bursts of 5x; reads get 5x the rate); 0 disables the limit")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	tokenMap, devToken, err := parseTokens(*tokens)
	if err != nil {
		return err
	}
	sealer, madeUp, err := keyRing(*keys, *dev)
	if err != nil {
		return err
	}
	signer, err := webhookSigner(*signingKey, *dev)
	if err != nil {
		return err
	}
	accountSalt, err := secret("-account-salt", *salt, *dev)
	if err != nil {
		return err
	}
	cfg := seller.Config{Tokens: tokenMap, AllowLoopbackWebhooks: *dev, Logger: log, Idempotency: &idem.Config{TTL: *ttl, Sealer: sealer},
		WebhookSigner: signer, AccountSalt: accountSalt, TaskDelay: *taskDelay, Sandbox: map[string]bool{}}
	for _, p := range strings.Split(*sandbox, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Sandbox[p] = true
		}
	}
	if *dev {
		for _, p := range tokenMap {
			cfg.Sandbox[p] = true
		}
	}
	switch {
	case *rate > 0:
		cfg.Idempotency.Limiter = idem.NewLimiter(idem.Limits{
			Writes: idem.Rate{PerSecond: *rate, Burst: max(1, int(*rate*5))},
			Reads:  idem.Rate{PerSecond: *rate * 5, Burst: max(1, int(*rate*25))},
		})
	default:
		cfg.Idempotency.Limiter = idem.Unlimited
	}

	if *conformanceKeys {
		if !*dev {
			return errors.New("-trust-conformance-keys requires -dev: anyone can sign with the conformance test keys")
		}
		if cfg.RequestSigning, err = seller.ConformanceSigning(); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dbURL != "" {
		pool, err := pgxpool.New(ctx, *dbURL)
		if err != nil {
			return fmt.Errorf("database: %w", err)
		}
		defer pool.Close()
		cfg.DB = pool
	}
	s, err := seller.New(ctx, cfg)
	if err != nil {
		return err
	}
	s.Start()
	defer s.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String() + "/mcp"
	fmt.Printf("adcp-seller: serving MCP at %s (storage: %s)\n", url, s.Mode())
	if madeUp {
		fmt.Println("adcp-seller: sealing stored answers with a key made up for this run (-dev); they will not open after a restart: set -encryption-keys to keep them")
	}
	if devToken != "" {
		fmt.Printf("adcp-seller: dev token (principal %q): %s\n", "dev", devToken)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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
