package seller

import (
	"context"

	"github.com/adcp-go/idempotency/adcp"
)

// The reads. Each is served through adcp.Read: a read that carries an
// idempotency_key is answered once and replayed for that key (AdCP 3.2);
// one without a key simply runs.

type productsResponse struct {
	Products []map[string]any `json:"products"`
}

// getProducts is get_products: the catalog, narrowed by the filters it
// understands. It always answers synchronously, so a webhook registration
// is refused as a well-formed request this seller does not support (AdCP
// 3.2 allows that or accepting it and sending nothing; the refusal is
// what a buyer can act on).
func (s *Seller) getProducts(_ context.Context, c *adcp.Call) (productsResponse, error) {
	var req getProductsRequest
	if err := c.Decode(&req); err != nil {
		return productsResponse{}, err
	}
	if len(req.PushNotificationConfig) > 0 && string(req.PushNotificationConfig) != "null" {
		return productsResponse{}, badRequest("push_notification_config", "get_products always answers synchronously and sends no webhook: omit push_notification_config")
	}
	switch req.BuyingMode {
	case "", "brief", "wholesale", "refine":
	default:
		return productsResponse{}, badRequest("buying_mode", "buying_mode must be brief, wholesale or refine")
	}
	var dt string
	var channels []string
	if req.Filters != nil {
		dt, channels = req.Filters.DeliveryType, req.Filters.Channels
	}
	return productsResponse{Products: s.catalog.productList(dt, channels)}, nil
}

type formatsResponse struct {
	Formats []map[string]any `json:"formats"`
}

// listCreativeFormats is list_creative_formats: the formats the catalog's
// products take.
func (s *Seller) listCreativeFormats(_ context.Context, c *adcp.Call) (formatsResponse, error) {
	var req readRequest
	if err := c.Decode(&req); err != nil {
		return formatsResponse{}, err
	}
	return formatsResponse{Formats: s.catalog.formatList()}, nil
}

type accountsResponse struct {
	Accounts []account `json:"accounts"`
}

// listAccounts is list_accounts: the accounts the caller has bought
// under (accounts open with their first media buy).
func (s *Seller) listAccounts(ctx context.Context, c *adcp.Call) (accountsResponse, error) {
	var req readRequest
	if err := c.Decode(&req); err != nil {
		return accountsResponse{}, err
	}
	accts, err := s.store.accounts(ctx, c.Principal)
	if err != nil {
		return accountsResponse{}, err
	}
	if accts == nil {
		accts = []account{}
	}
	return accountsResponse{Accounts: accts}, nil
}

type creativesResponse struct {
	QuerySummary struct {
		TotalMatching int `json:"total_matching"`
		Returned      int `json:"returned"`
	} `json:"query_summary"`
	Pagination struct {
		HasMore bool `json:"has_more"`
	} `json:"pagination"`
	Creatives []any `json:"creatives"`
}

// listCreatives is list_creatives. This sandbox seller takes no creatives
// (it has no sync_creatives), so the library is always empty.
func (s *Seller) listCreatives(_ context.Context, c *adcp.Call) (creativesResponse, error) {
	var req readRequest
	if err := c.Decode(&req); err != nil {
		return creativesResponse{}, err
	}
	return creativesResponse{Creatives: []any{}}, nil
}
