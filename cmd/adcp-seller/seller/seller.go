// Package seller is the reference AdCP seller agent: MCP over streamable
// HTTP with get_adcp_capabilities, create_media_buy, get_media_buys and
// comply_test_controller, built on package idem through packages adcp and
// adcpmcp. It is example code, importable only so that the integration
// tests can run it in process; it makes no compatibility promise.
//
// Where to look:
//
//   - seller.go: configuration, HTTP wiring and authentication;
//   - tools.go: the tools, written once for both storage modes;
//   - store.go: the storage interface the tools write through;
//   - memory.go and postgres.go: its two implementations (memstore and a
//     Guard; Postgres with idem.RunInTx, where the media buy, its webhook
//     event and the stored answer commit in one transaction);
//   - webhook.go: webhook events, delivery and the SSRF guard;
//   - http.go, ops.go and telemetry.go: request ids and the access log,
//     /healthz and /readyz, and the metrics for /metrics.
package seller

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
)

// Config configures a Seller.
type Config struct {
	// Tokens maps each accepted bearer token to its principal. Required.
	Tokens map[string]string
	// DB, when set, keeps everything in Postgres; otherwise in memory.
	DB *pgxpool.Pool
	// AllowLoopbackWebhooks admits http:// and loopback webhook URLs (the
	// -dev flag; the compliance runner's receiver is one).
	AllowLoopbackWebhooks bool
	// Idempotency configures the idempotency layer (TTL, rate limit, ...).
	Idempotency *idem.Config
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// DispatchInterval is how often the Postgres outbox is polled besides
	// the nudge after each commit. Defaults to one second.
	DispatchInterval time.Duration
	// Telemetry, when set, records the library's metrics and spans and the
	// pool's statistics (see telemetry.go).
	Telemetry *Telemetry
}

// Seller is the reference seller. Create it with New, serve Handler, call
// Start to deliver webhooks and sweep, and Close when done.
type Seller struct {
	cfg    Config
	log    *slog.Logger
	store  store
	poster *poster
	http   http.Handler
	ops    opsState

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// New builds a Seller. In Postgres mode it applies the library's and the
// seller's migrations first.
func New(ctx context.Context, cfg Config) (*Seller, error) {
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("seller: at least one bearer token is required")
	}
	s := &Seller{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.poster = &poster{client: webhookClient(cfg.AllowLoopbackWebhooks), log: s.log}
	var err error
	if cfg.Idempotency, err = s.instrument(cfg); err != nil {
		return nil, err
	}
	if cfg.DB != nil {
		s.store, err = newPostgresStore(ctx, cfg.DB, cfg.Idempotency, s.poster, s.log, cfg.DispatchInterval)
	} else {
		s.store, err = newMemoryStore(cfg.Idempotency, s.poster)
	}
	if err != nil {
		return nil, err
	}
	server := s.newMCPServer()
	server.AddReceivingMiddleware(noteMCP)
	// The HTTP body limit follows the payload limit, so that an oversized
	// request is refused before the MCP SDK decodes it (several times).
	maxPayload := 1 << 20
	if cfg.Idempotency != nil && cfg.Idempotency.MaxPayloadBytes > 0 {
		maxPayload = cfg.Idempotency.MaxPayloadBytes
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
	mux.Handle("/mcp", adcpAuthHeader(auth.RequireBearerToken(verify, nil)(adcpmcp.AcceptJSON(streamable))))
	s.http = s.withOps(mux)
	return s, nil
}

// Handler serves MCP at /mcp, liveness at /healthz and readiness at /readyz
// (see ops.go), with a request id and an access log line per request (see
// http.go).
func (s *Seller) Handler() http.Handler { return s.http }

// Mode is "postgres" or "memory".
func (s *Seller) Mode() string { return s.store.mode() }

// Start runs the background work until Close: in Postgres mode the outbox
// dispatcher and the sweeper (memstore sweeps by itself).
func (s *Seller) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Go(func() { s.store.run(ctx) })
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
