// Package seller is the reference AdCP seller agent: MCP over streamable
// HTTP, with get_adcp_capabilities, create_media_buy, get_media_buys and
// comply_test_controller, built on package idem through package adcpmcp.
//
// With a database it keeps media buys in Postgres and writes each one, its
// webhook event (a transactional outbox) and the stored idempotent answer in
// one transaction ([idem.RunInTx]); a dispatcher delivers the events after
// commit. Without one it keeps everything in memory ([memstore]).
package seller

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"

	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/internal/seller/sellerdb"
	"github.com/adcp-go/idempotency/memstore"
	"github.com/adcp-go/idempotency/migrations"
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
}

// Seller is the reference seller. Create it with New, serve Handler, call
// Start to deliver webhooks and sweep, and Close when done.
type Seller struct {
	cfg    Config
	log    *slog.Logger
	server *mcp.Server
	http   http.Handler

	// memory mode
	mem    *memstore.Store
	guard  *idem.Guard
	buys   *memoryBuys
	outbox *memoryOutbox

	// Postgres mode
	store  *idem.Store
	q      sellerdb.Queries
	nudge  chan struct{}
	poster *poster

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// New builds a Seller. In Postgres mode it applies the library's and the
// seller's migrations first.
func New(ctx context.Context, cfg Config) (*Seller, error) {
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("seller: at least one bearer token is required")
	}
	s := &Seller{cfg: cfg, log: cfg.Logger, nudge: make(chan struct{}, 1)}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.poster = &poster{client: webhookClient(cfg.AllowLoopbackWebhooks), log: s.log}
	if cfg.DB != nil {
		if err := migrate(ctx, cfg.DB); err != nil {
			return nil, err
		}
		st, err := idem.NewStore(cfg.Idempotency)
		if err != nil {
			return nil, err
		}
		s.store = st
	} else {
		s.mem = memstore.New(nil)
		g, err := idem.New(s.mem, cfg.Idempotency)
		if err != nil {
			s.mem.Close()
			return nil, err
		}
		s.guard, s.buys, s.outbox = g, newMemoryBuys(), newMemoryOutbox(s.poster)
	}
	s.server = s.newMCPServer()
	// The HTTP body limit follows the payload limit, so that an oversized
	// request is refused before the MCP SDK decodes it (several times).
	maxPayload := 1 << 20
	if cfg.Idempotency != nil && cfg.Idempotency.MaxPayloadBytes > 0 {
		maxPayload = cfg.Idempotency.MaxPayloadBytes
	}
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.server },
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
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.http = mux
	return s, nil
}

// Handler serves MCP at /mcp and a health check at /healthz.
func (s *Seller) Handler() http.Handler { return s.http }

// Mode is "postgres" or "memory".
func (s *Seller) Mode() string {
	if s.store != nil {
		return "postgres"
	}
	return "memory"
}

// Start runs the background work until Close: the outbox dispatcher and
// the sweeper in Postgres mode (memstore sweeps by itself).
func (s *Seller) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if s.store == nil {
		return
	}
	s.wg.Go(func() { s.dispatch(ctx) })
	s.wg.Go(func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if n, err := s.store.Sweep(ctx, s.cfg.DB); err != nil {
					s.log.Warn("sweep failed", "error", err)
				} else if n > 0 {
					s.log.Info("swept idempotency keys", "deleted", n)
				}
			}
		}
	})
}

// Close stops the background work and waits for it.
func (s *Seller) Close() {
	if s.stop != nil {
		s.stop()
	}
	s.wg.Wait()
	if s.outbox != nil {
		s.outbox.close()
	}
	if s.mem != nil {
		_ = s.mem.Close()
	}
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		return err
	}
	return migrateSeller(ctx, db)
}

func migrateSeller(ctx context.Context, db *sql.DB) error {
	store, err := database.NewStore(database.DialectPostgres, "adcp_seller_db_version")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider("", db, schemaFS, goose.WithStore(store), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("seller migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("seller migrations: %w", err)
	}
	return nil
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

// webhookClient refuses, at connect time, addresses the SSRF guard forbids,
// so that a hostname resolving to a private address is caught too.
func webhookClient(allowLoopback bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, _ := net.SplitHostPort(address)
		ip := net.ParseIP(host)
		if ip == nil {
			return nil
		}
		if ip.IsLoopback() && allowLoopback {
			return nil
		}
		if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() {
			return fmt.Errorf("webhook address %s is not allowed", ip)
		}
		return nil
	}}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // never follow a redirect to somewhere else
		},
	}
}

func (s *Seller) newMCPServer() *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "adcp-go-reference-seller", Version: "0.1.0"}, nil)
	opts := &adcpmcp.Options{Logger: s.log}

	adcpmcp.AddTool(srv, &mcp.Tool{Name: "get_adcp_capabilities", Description: "AdCP capabilities of this seller, including adcp.idempotency."},
		adcpmcp.ReadOnly(opts, s.capabilities))

	var create mcp.ToolHandler
	if s.store != nil {
		create = adcpmcp.MutatingTx(s.store, s.cfg.DB, opts, s.createMediaBuyTx)
		create = s.nudgeAfter(create)
	} else {
		create = adcpmcp.Mutating(s.guard, opts, s.createMediaBuyMemory)
	}
	adcpmcp.AddTool(srv, &mcp.Tool{Name: "create_media_buy", Description: "Create a media buy. Requires idempotency_key (16-255 of A-Za-z0-9_.:-)."}, create)

	adcpmcp.AddTool(srv, &mcp.Tool{Name: "get_media_buys", Description: "The caller's media buys, all or those named by media_buy_ids."},
		adcpmcp.ReadOnly(opts, s.getMediaBuys))
	adcpmcp.AddTool(srv, &mcp.Tool{Name: "comply_test_controller", Description: "Compliance test controller; supports list_scenarios."},
		adcpmcp.ReadOnly(opts, complyTestController))
	return srv
}

// nudgeAfter wakes the outbox dispatcher after each successful create, so a
// webhook leaves right after its transaction commits.
func (s *Seller) nudgeAfter(h mcp.ToolHandler) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := h(ctx, req)
		if err == nil && res != nil && !res.IsError {
			select {
			case s.nudge <- struct{}{}:
			default:
			}
		}
		return res, err
	}
}

// Wire types. Field names follow AdCP 3.0.

type capabilitiesResponse struct {
	ADCP struct {
		MajorVersions []int           `json:"major_versions"`
		Idempotency   idem.Capability `json:"idempotency"`
	} `json:"adcp"`
	SupportedProtocols []string       `json:"supported_protocols"`
	Account            map[string]any `json:"account"`
	MediaBuy           map[string]any `json:"media_buy"`
}

func (s *Seller) capability() idem.Capability {
	if s.store != nil {
		return s.store.Capability()
	}
	return s.guard.Capability()
}

func (s *Seller) capabilities(context.Context, *adcpmcp.Call) (capabilitiesResponse, error) {
	var r capabilitiesResponse
	r.ADCP.MajorVersions = []int{3}
	r.ADCP.Idempotency = s.capability()
	r.SupportedProtocols = []string{"media_buy"}
	r.Account = map[string]any{"supported_billing": []string{"operator"}, "sandbox": true}
	r.MediaBuy = map[string]any{"supported_pricing_models": []string{"cpm"}}
	return r, nil
}

type createRequest struct {
	IdempotencyKey string          `json:"idempotency_key"`
	Account        json.RawMessage `json:"account"`
	StartTime      string          `json:"start_time"`
	EndTime        string          `json:"end_time"`
	Packages       []struct {
		ProductID       string  `json:"product_id"`
		Budget          float64 `json:"budget"`
		PricingOptionID string  `json:"pricing_option_id"`
	} `json:"packages"`
	PushNotificationConfig *struct {
		URL string `json:"url"`
	} `json:"push_notification_config"`
}

type packageOut struct {
	PackageID string  `json:"package_id"`
	ProductID string  `json:"product_id"`
	Budget    float64 `json:"budget"`
	Currency  string  `json:"currency,omitempty"`
}

type createResponse struct {
	MediaBuyID     string       `json:"media_buy_id"`
	Status         string       `json:"status"`
	ConfirmedAt    string       `json:"confirmed_at"`
	Packages       []packageOut `json:"packages"`
	IdempotencyKey string       `json:"idempotency_key"`
}

// mediaBuy is a stored media buy as get_media_buys returns it.
type mediaBuy struct {
	MediaBuyID  string       `json:"media_buy_id"`
	Status      string       `json:"status"`
	Currency    string       `json:"currency"`
	TotalBudget float64      `json:"total_budget"`
	StartTime   string       `json:"start_time"`
	EndTime     string       `json:"end_time"`
	ConfirmedAt string       `json:"confirmed_at"`
	Packages    []packageOut `json:"packages"`

	account json.RawMessage
}

// newBuy validates a create request and makes the media buy and its
// answer. It touches no storage.
func (s *Seller) newBuy(c *adcpmcp.Call) (createRequest, mediaBuy, createResponse, error) {
	var req createRequest
	if err := c.Decode(&req); err != nil {
		return req, mediaBuy{}, createResponse{}, err
	}
	if len(req.Packages) == 0 {
		return req, mediaBuy{}, createResponse{}, &adcpmcp.Error{Code: "INVALID_REQUEST", Message: "packages must not be empty", Recovery: "correctable", Field: "packages"}
	}
	if pnc := req.PushNotificationConfig; pnc != nil && pnc.URL != "" {
		if err := checkWebhookURL(pnc.URL, s.cfg.AllowLoopbackWebhooks); err != nil {
			return req, mediaBuy{}, createResponse{}, &adcpmcp.Error{Code: "INVALID_REQUEST", Message: err.Error(), Recovery: "correctable", Field: "push_notification_config.url"}
		}
	}
	// Flight dates are taken as sent: the compliance runner sends sample
	// dates that may lie in the past (sandbox accounts).
	id := "mb_" + randomHex(6)
	now := time.Now().UTC().Format(time.RFC3339)
	b := mediaBuy{MediaBuyID: id, Status: "pending_creatives", Currency: "USD", StartTime: req.StartTime, EndTime: req.EndTime, ConfirmedAt: now, account: req.Account}
	resp := createResponse{MediaBuyID: id, Status: b.Status, ConfirmedAt: now, IdempotencyKey: c.Key}
	for i, p := range req.Packages {
		pkg := packageOut{PackageID: fmt.Sprintf("%s_p%d", id, i), ProductID: p.ProductID, Budget: p.Budget}
		resp.Packages = append(resp.Packages, pkg)
		pkg.Currency = b.Currency
		b.Packages = append(b.Packages, pkg)
		b.TotalBudget += p.Budget
	}
	if len(b.account) == 0 {
		b.account = json.RawMessage("null")
	}
	return req, b, resp, nil
}

// webhookEvent is the completion event for a media buy; nil without a
// push_notification_config.url.
func webhookEvent(req createRequest, resp createResponse) *event {
	if req.PushNotificationConfig == nil || req.PushNotificationConfig.URL == "" {
		return nil
	}
	u := req.PushNotificationConfig.URL
	result := resp
	result.IdempotencyKey = ""
	body, _ := json.Marshal(map[string]any{
		"idempotency_key": "evt_" + randomHex(12), // fixed now, so every retry carries the same key
		"operation_id":    operationID(u, resp.MediaBuyID),
		"task_id":         "task_" + resp.MediaBuyID,
		"task_type":       "create_media_buy",
		"protocol":        "media-buy",
		"status":          "completed",
		"timestamp":       resp.ConfirmedAt,
		"result":          json.RawMessage(mustJSON(resultBody(result))),
	})
	return &event{mediaBuyID: resp.MediaBuyID, url: u, body: body}
}

func resultBody(r createResponse) map[string]any {
	return map[string]any{"media_buy_id": r.MediaBuyID, "status": r.Status, "confirmed_at": r.ConfirmedAt, "packages": r.Packages}
}

// operationID is the last path segment of the push URL: the caller's own
// operation id, which receivers match deliveries by.
func operationID(u, fallback string) string {
	path := strings.TrimRight(u, "/")
	if i := strings.LastIndexByte(path, '/'); i >= 0 && i < len(path)-1 && !strings.Contains(path[i+1:], ":") {
		if q := strings.IndexAny(path[i+1:], "?#"); q >= 0 {
			return path[i+1 : i+1+q]
		}
		return path[i+1:]
	}
	return fallback
}

func (s *Seller) createMediaBuyMemory(_ context.Context, c *adcpmcp.Call) (createResponse, error) {
	req, b, resp, err := s.newBuy(c)
	if err != nil {
		return resp, err
	}
	s.buys.add(c.Principal, b)
	if e := webhookEvent(req, resp); e != nil {
		s.outbox.enqueue(*e)
	}
	return resp, nil
}

func (s *Seller) createMediaBuyTx(ctx context.Context, tx pgx.Tx, c *adcpmcp.Call) (createResponse, error) {
	req, b, resp, err := s.newBuy(c)
	if err != nil {
		return resp, err
	}
	err = s.q.MediaBuyInsert(ctx, tx, sellerdb.MediaBuyInsertParams{
		MediaBuyID: b.MediaBuyID, PrincipalID: c.Principal, Account: b.account, Status: b.Status,
		Currency: b.Currency, TotalBudget: b.TotalBudget, StartTime: b.StartTime, EndTime: b.EndTime,
		Packages: mustJSON(b.Packages),
	})
	if err != nil {
		return resp, fmt.Errorf("storing the media buy: %w", err)
	}
	if e := webhookEvent(req, resp); e != nil {
		if err := s.q.OutboxInsert(ctx, tx, sellerdb.OutboxInsertParams{MediaBuyID: b.MediaBuyID, URL: e.url, Body: e.body}); err != nil {
			return resp, fmt.Errorf("queueing the webhook: %w", err)
		}
	}
	return resp, nil
}

type getMediaBuysRequest struct {
	MediaBuyIDs []string `json:"media_buy_ids"`
}

type getMediaBuysResponse struct {
	MediaBuys []mediaBuy `json:"media_buys"`
}

func (s *Seller) getMediaBuys(ctx context.Context, c *adcpmcp.Call) (getMediaBuysResponse, error) {
	var req getMediaBuysRequest
	if err := c.Decode(&req); err != nil {
		return getMediaBuysResponse{}, err
	}
	if c.Principal == "" {
		return getMediaBuysResponse{}, &adcpmcp.Error{Code: "AUTH_REQUIRED", Message: "authentication is required", Recovery: "correctable"}
	}
	if s.store == nil {
		return getMediaBuysResponse{MediaBuys: s.buys.list(c.Principal, req.MediaBuyIDs)}, nil
	}
	rows, err := s.q.MediaBuyList(ctx, s.cfg.DB, sellerdb.MediaBuyListParams{PrincipalID: c.Principal, IDs: append([]string{}, req.MediaBuyIDs...)})
	if err != nil {
		return getMediaBuysResponse{}, err
	}
	out := getMediaBuysResponse{MediaBuys: []mediaBuy{}}
	for _, r := range rows {
		b := mediaBuy{MediaBuyID: r.MediaBuyID, Status: r.Status, Currency: r.Currency, TotalBudget: r.TotalBudget,
			StartTime: r.StartTime, EndTime: r.EndTime, ConfirmedAt: r.CreatedAt.UTC().Format(time.RFC3339)}
		if err := json.Unmarshal(r.Packages, &b.Packages); err != nil {
			return out, err
		}
		out.MediaBuys = append(out.MediaBuys, b)
	}
	return out, nil
}

type complyRequest struct {
	Scenario string `json:"scenario"`
}

// complyTestController answers list_scenarios with no scenarios: this
// seller needs no seeded state for the idempotency storyboard.
func complyTestController(_ context.Context, c *adcpmcp.Call) (map[string]any, error) {
	var req complyRequest
	if err := c.Decode(&req); err != nil {
		return nil, err
	}
	if req.Scenario == "list_scenarios" {
		return map[string]any{"success": true, "scenarios": []string{}}, nil
	}
	return map[string]any{"success": false, "error": "UNKNOWN_SCENARIO", "error_detail": "this seller supports list_scenarios only"}, nil
}

// memoryBuys holds the memory mode's media buys, per principal.
type memoryBuys struct {
	mu  sync.Mutex
	all map[string][]mediaBuy
}

func newMemoryBuys() *memoryBuys { return &memoryBuys{all: make(map[string][]mediaBuy)} }

func (m *memoryBuys) add(principal string, b mediaBuy) {
	m.mu.Lock()
	m.all[principal] = append(m.all[principal], b)
	m.mu.Unlock()
}

func (m *memoryBuys) list(principal string, ids []string) []mediaBuy {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []mediaBuy{}
	for _, b := range m.all[principal] {
		if len(ids) == 0 || slices.Contains(ids, b.MediaBuyID) {
			out = append(out, b)
		}
	}
	return out
}

func (m *memoryBuys) count(principal string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.all[principal])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
