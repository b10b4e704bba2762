// Package seller is the reference AdCP seller agent, built on package idem
// through packages adcp, adcpmcp and adcpa2a: MCP over streamable HTTP and
// A2A 0.3 JSON-RPC from one process on one store, AdCP 3.0 to 3.2, in
// memory or on Postgres. It is example code, importable only so
// that the integration tests can run it in process; it makes no
// compatibility promise.
//
// Where to look:
//
//   - seller.go: configuration, HTTP wiring and authentication;
//   - tools.go: the tools (one table for every transport) and the
//     capabilities;
//   - a2a.go: the same tools as A2A skills, the agent card, and A2A
//     authentication (the same tokens and signatures as MCP);
//   - wire.go: the request types, from which the published input schemas
//     are derived;
//   - mediabuy.go: create_media_buy (its synchronous and submitted arms),
//     update_media_buy, get_media_buys, validation;
//   - tasks.go: asynchronous tasks, their completion and get_task_status;
//   - reads.go: get_products, list_creative_formats, list_creatives;
//   - accounts.go: sync_accounts and list_accounts;
//   - proposals.go: get_products' proposals (brief and refine modes);
//   - catalog.go: the products, pricing options and formats;
//   - controller.go: comply_test_controller (sandbox principals only);
//   - delivery.go: the controller's simulate_delivery and
//     get_media_buy_delivery;
//   - store.go: the storage interface the tools write through, and
//     memory.go and postgres.go, its two implementations (memstore and a
//     Guard; Postgres with idem.RunInTx, where the media buy or task, its
//     River jobs — webhook, scheduled completion — and the stored answer
//     commit in one transaction);
//   - signing.go: RFC 9421 signed requests (verification, the
//     request_signing capability, the sandbox grading endpoint);
//   - http.go, ops.go and telemetry.go: request ids and the access log,
//     /healthz and /readyz, and the metrics for /metrics.
package seller

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/webhook"
)

// Config configures a Seller.
type Config struct {
	// Tokens maps each accepted bearer token to its principal. Required.
	Tokens map[string]string
	// Sandbox names the principals that may call comply_test_controller
	// (seed fixtures, force task outcomes). Without any, the tool is not
	// offered. Never list a production principal.
	Sandbox map[string]bool
	// DB, when set, keeps everything in Postgres; otherwise in memory.
	DB *pgxpool.Pool
	// AllowLoopbackWebhooks admits http:// and loopback webhook URLs (the
	// -dev flag; the compliance runner's receiver is one).
	AllowLoopbackWebhooks bool
	// Idempotency configures the idempotency layer (TTL, rate limit,
	// encryption at rest, ...).
	Idempotency *idem.Config
	// AccountSalt, when set, scopes AdCP 3.1+ requests' keys by (principal,
	// account) as 3.1 requires (see adcp.Options.AccountSalt); AdCP 3.0
	// requests stay scoped by principal, as 3.0 specifies. It must be the
	// same on every replica and across restarts.
	AccountSalt []byte
	// WebhookSigner signs webhooks (RFC 9421, AdCP webhook profile); its
	// public key is served at /.well-known/jwks.json. Nil makes up an
	// Ed25519 key for this process, which is fine for one process in
	// development but not for replicas (each would publish another key).
	WebhookSigner *httpsig.Signer
	// TaskDelay is how long a submitted create_media_buy takes to complete.
	// Defaults to 2 seconds.
	TaskDelay time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// RequestSigning configures RFC 9421 signed requests (signing.go).
	// Defaults to verifying every signature and trusting no signer.
	RequestSigning *RequestSigning
	// Telemetry, when set, records the library's metrics and spans and the
	// pool's statistics (see telemetry.go).
	Telemetry *Telemetry
	// PublicURL is the seller's origin as clients reach it, such as
	// "https://seller.example": the A2A agent card advertises PublicURL +
	// "/a2a" as its JSON-RPC endpoint. Empty makes the card name the Host
	// each card request came to (for tests and development; behind a proxy
	// set it).
	PublicURL string
}

// Seller is the reference seller. Create it with New, serve Handler, call
// Start to run its background work, and Close when done.
type Seller struct {
	cfg        Config
	log        *slog.Logger
	store      store
	catalog    *catalog
	controller controller
	urls       *webhook.URLPolicy
	sender     *webhook.Sender
	tools      []tool
	http       http.Handler

	signing *signatures
	ops     opsState

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// New builds a Seller. In Postgres mode it applies the library's, River's
// and the seller's migrations first.
func New(ctx context.Context, cfg Config) (*Seller, error) {
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("seller: at least one bearer token is required")
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, errors.New("seller: PublicURL must be an http(s) origin such as https://seller.example")
		}
		cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	}
	cfg.TaskDelay = cmp.Or(cfg.TaskDelay, 2*time.Second)
	s := &Seller{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()), catalog: newCatalog(),
		urls: &webhook.URLPolicy{AllowLoopback: cfg.AllowLoopbackWebhooks}}
	signer := cfg.WebhookSigner
	if signer == nil {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		if signer, err = httpsig.NewSigner(httpsig.ProfileWebhook, "seller-"+randomHex(4), key); err != nil {
			return nil, err
		}
	}
	var err error
	if s.sender, err = webhook.NewSender(&webhook.SenderConfig{Signer: signer, URLs: s.urls}); err != nil {
		return nil, fmt.Errorf("seller: %w", err)
	}
	jwk, err := httpsig.NewPublicJWK(signer.KeyID, signer.Key.Public())
	if err != nil {
		return nil, fmt.Errorf("seller: webhook signing key: %w", err)
	}
	jwks := &httpsig.JWKSHandler{}
	set, err := httpsig.NewJWKS(jwk)
	if err == nil {
		err = jwks.Publish(set)
	}
	if err != nil {
		return nil, fmt.Errorf("seller: webhook signing key: %w", err)
	}
	if cfg.Idempotency, err = s.instrument(cfg); err != nil {
		return nil, err
	}

	complete := func(ctx context.Context, id string) error {
		_, err := s.completeTask(ctx, id, nil)
		return err
	}
	if cfg.DB != nil {
		s.store, err = newPostgresStore(ctx, cfg.DB, cfg.Idempotency, s.sender, s.log, complete)
	} else {
		s.store, err = newMemoryStore(cfg.Idempotency, s.sender, s.log, complete)
	}
	if err != nil {
		return nil, err
	}
	s.tools = s.newTools()

	server := s.newMCPServer()
	server.AddReceivingMiddleware(noteMCP)
	// The HTTP body limit follows the payload limit, so that an oversized
	// request is refused before the MCP SDK decodes it (several times).
	maxPayload := 1 << 20
	if cfg.Idempotency != nil && cfg.Idempotency.MaxPayloadBytes > 0 {
		maxPayload = cfg.Idempotency.MaxPayloadBytes
	}
	if s.signing, err = newSignatures(cfg, s.log, int64(maxPayload)+64<<10); err != nil {
		return nil, err
	}
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true, MaxRequestBodyBytes: int64(maxPayload) + 64<<10})
	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		p, ok := cfg.Tokens[token]
		if !ok {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: p, Expiration: time.Now().Add(time.Hour)}, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", s.signing.verifyMCP(adcpAuthHeader(bearerChallenge(auth.RequireBearerToken(s.signing.signerOr(verify), nil)(adcpmcp.AcceptJSON(streamable))))))
	a2a, err := s.newA2A(int64(maxPayload) + 64<<10)
	if err != nil {
		return nil, err
	}
	a2a.mount(mux)
	mux.Handle("GET "+httpsig.WellKnownJWKSPath, jwks)
	s.addProbes(mux)
	// Request ids and the access log (http.go) around everything.
	s.http = logRequests(s.log, s.signing.gradingEndpoint(mux))
	return s, nil
}

// Handler serves MCP at /mcp, A2A JSON-RPC at /a2a and its agent card at
// /a2a/.well-known/agent-card.json and /.well-known/agent-card.json (see
// a2a.go), the webhook signing keys at /.well-known/jwks.json, liveness at
// /healthz and readiness at /readyz (see ops.go), with a request id and an
// access log line per request (see http.go).
func (s *Seller) Handler() http.Handler { return s.http }

// Mode is "postgres" or "memory".
func (s *Seller) Mode() string { return s.store.mode() }

// Start runs the background work until Close: webhook deliveries and task
// completions (River in Postgres mode, goroutines in memory) and sweeping
// expired keys (memstore sweeps by itself).
func (s *Seller) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Go(func() {
		if err := s.store.run(ctx); err != nil {
			s.log.Error("seller: background work stopped", "error", err)
		}
	})
	s.ops.state.Store(stateRunning)
}

// Close stops the background work and waits for it.
func (s *Seller) Close() {
	s.ops.state.Store(stateClosed)
	if s.stop != nil {
		s.stop()
	}
	s.wg.Wait()
	s.store.close()
	s.sender.CloseIdleConnections()
}

// MediaBuyCount reports how many media buys principal has (for tests and
// operators).
func (s *Seller) MediaBuyCount(ctx context.Context, principal string) (int, error) {
	return s.store.count(ctx, principal)
}

// adcpAuthHeader accepts the token in x-adcp-auth too, which AdCP clients
// send beside Authorization: Bearer.
func adcpAuthHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			if t := r.Header.Get("X-Adcp-Auth"); t != "" {
				r.Header.Set("Authorization", "Bearer "+t)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// bearerChallenge adds the RFC 6750 section 3 challenge to the bearer
// layer's 401: WWW-Authenticate: Bearer realm="adcp", with
// error="invalid_token" when a token was presented and refused. The MCP
// SDK's bearer middleware sends one only when it is given OAuth resource
// metadata, which this seller (static API keys, no OAuth issuer) has not.
func bearerChallenge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		challenge := `Bearer realm="adcp"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		next.ServeHTTP(&challengeWriter{ResponseWriter: w, challenge: challenge}, r)
	})
}

// challengeWriter sets WWW-Authenticate on a 401 that has none, or only
// a bare "Bearer" (the A2A handler's).
type challengeWriter struct {
	http.ResponseWriter
	challenge string
}

func (c *challengeWriter) WriteHeader(status int) {
	if h := c.Header().Get("WWW-Authenticate"); status == http.StatusUnauthorized && (h == "" || h == "Bearer") {
		c.Header().Set("WWW-Authenticate", c.challenge)
	}
	c.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (c *challengeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// Flush implements http.Flusher for handlers that assert it.
func (c *challengeWriter) Flush() { _ = http.NewResponseController(c.ResponseWriter).Flush() }
