package seller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
)

func (s *Seller) newMCPServer() *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "adcp-go-reference-seller", Version: "0.1.0"}, nil)
	opts := &adcpmcp.Options{Logger: s.log}

	adcpmcp.AddTool(srv, &mcp.Tool{Name: "get_adcp_capabilities", Description: "AdCP capabilities of this seller, including adcp.idempotency."},
		adcpmcp.ReadOnly(opts, s.capabilities))
	adcpmcp.AddTool(srv, &mcp.Tool{Name: "create_media_buy", Description: "Create a media buy. Requires idempotency_key (16-255 of A-Za-z0-9_.:-)."},
		s.store.mutating(opts, s.createMediaBuy))
	adcpmcp.AddTool(srv, &mcp.Tool{Name: "get_media_buys", Description: "The caller's media buys, all or those named by media_buy_ids."},
		adcpmcp.ReadOnly(opts, s.getMediaBuys))
	adcpmcp.AddTool(srv, &mcp.Tool{Name: "comply_test_controller", Description: "Compliance test controller; supports list_scenarios."},
		adcpmcp.ReadOnly(opts, complyTestController))
	return srv
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

	RequestSigning httpsig.Capability `json:"request_signing"`
}

func (s *Seller) capabilities(context.Context, *adcp.Call) (capabilitiesResponse, error) {
	var r capabilitiesResponse
	r.ADCP.MajorVersions = []int{3}
	r.ADCP.Idempotency = s.store.capability()
	r.RequestSigning = s.signing.capability()
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

// createMediaBuy is create_media_buy: it validates the request, stores the
// media buy and queues its completion webhook through w, and answers. It
// runs at most once per (principal, idempotency_key).
func (s *Seller) createMediaBuy(ctx context.Context, w writer, c *adcp.Call) (any, error) {
	req, b, resp, err := s.newBuy(c)
	if err != nil {
		return nil, err
	}
	if err := w.addBuy(ctx, c.Principal, b); err != nil {
		return nil, err
	}
	if e := webhookEvent(req, resp); e != nil {
		if err := w.enqueue(ctx, *e); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// newBuy validates a create request and makes the media buy and its
// answer. It touches no storage.
func (s *Seller) newBuy(c *adcp.Call) (createRequest, mediaBuy, createResponse, error) {
	var req createRequest
	if err := c.Decode(&req); err != nil {
		return req, mediaBuy{}, createResponse{}, err
	}
	if len(req.Packages) == 0 {
		return req, mediaBuy{}, createResponse{}, &adcp.Error{Code: "INVALID_REQUEST", Message: "packages must not be empty", Recovery: "correctable", Field: "packages"}
	}
	if pnc := req.PushNotificationConfig; pnc != nil && pnc.URL != "" {
		if err := checkWebhookURL(pnc.URL, s.cfg.AllowLoopbackWebhooks); err != nil {
			return req, mediaBuy{}, createResponse{}, &adcp.Error{Code: "INVALID_REQUEST", Message: err.Error(), Recovery: "correctable", Field: "push_notification_config.url"}
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

type getMediaBuysRequest struct {
	MediaBuyIDs []string `json:"media_buy_ids"`
}

type getMediaBuysResponse struct {
	MediaBuys []mediaBuy `json:"media_buys"`
}

func (s *Seller) getMediaBuys(ctx context.Context, c *adcp.Call) (getMediaBuysResponse, error) {
	var req getMediaBuysRequest
	if err := c.Decode(&req); err != nil {
		return getMediaBuysResponse{}, err
	}
	if c.Principal == "" {
		return getMediaBuysResponse{}, &adcp.Error{Code: "AUTH_REQUIRED", Message: "authentication is required", Recovery: "correctable"}
	}
	buys, err := s.store.list(ctx, c.Principal, req.MediaBuyIDs)
	return getMediaBuysResponse{MediaBuys: buys}, err
}

type complyRequest struct {
	Scenario string `json:"scenario"`
}

// complyTestController answers list_scenarios with no scenarios: this
// seller needs no seeded state for the idempotency storyboard.
func complyTestController(_ context.Context, c *adcp.Call) (map[string]any, error) {
	var req complyRequest
	if err := c.Decode(&req); err != nil {
		return nil, err
	}
	if req.Scenario == "list_scenarios" {
		return map[string]any{"success": true, "scenarios": []string{}}, nil
	}
	return map[string]any{"success": false, "error": "UNKNOWN_SCENARIO", "error_detail": "this seller supports list_scenarios only"}, nil
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
