package seller

import (
	"context"
	"encoding/json"

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
	Formats    []map[string]any `json:"formats"`
	Pagination pagination       `json:"pagination"`
}

// listCreativeFormats is list_creative_formats: the formats the catalog's
// products take or, for an account that comply_test_controller seeded
// formats for, those formats; a page of them.
func (s *Seller) listCreativeFormats(_ context.Context, c *adcp.Call) (formatsResponse, error) {
	var req listRequest
	if err := c.Decode(&req); err != nil {
		return formatsResponse{}, err
	}
	page, p, err := paginate("formats", s.catalog.formatList(accountKey(req.Account)), req.Pagination)
	if err != nil {
		return formatsResponse{}, err
	}
	return formatsResponse{Formats: page, Pagination: p}, nil
}

// accountKey is the account a request names, as an account id: the
// account_id given, or the id of the natural key brand + operator; "" when
// it names none.
func accountKey(ref *accountRef) string {
	switch {
	case ref == nil:
		return ""
	case ref.AccountID != "":
		return ref.AccountID
	case ref.Brand != nil && ref.Brand.Domain != "" && ref.Operator != "":
		return naturalAccount(ref).AccountID
	}
	return ""
}

type accountsResponse struct {
	Accounts   []account  `json:"accounts"`
	Pagination pagination `json:"pagination"`
}

// listAccounts is list_accounts: a page of the accounts the caller has
// bought under (accounts open with their first media buy), oldest first.
func (s *Seller) listAccounts(ctx context.Context, c *adcp.Call) (accountsResponse, error) {
	var req listRequest
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
	page, p, err := paginate("accounts", accts, req.Pagination)
	if err != nil {
		return accountsResponse{}, err
	}
	return accountsResponse{Accounts: page, Pagination: p}, nil
}

type creativesResponse struct {
	QuerySummary struct {
		TotalMatching int `json:"total_matching"`
		Returned      int `json:"returned"`
	} `json:"query_summary"`
	Pagination pagination        `json:"pagination"`
	Creatives  []json.RawMessage `json:"creatives"`
}

// listCreatives is list_creatives: a page of the caller's creative
// library, oldest first. The library holds what comply_test_controller's
// seed_creative seeded: this seller takes no creatives from buyers (it has
// no sync_creatives).
func (s *Seller) listCreatives(ctx context.Context, c *adcp.Call) (creativesResponse, error) {
	var req listRequest
	if err := c.Decode(&req); err != nil {
		return creativesResponse{}, err
	}
	lib, err := s.store.creatives(ctx, c.Principal)
	if err != nil {
		return creativesResponse{}, err
	}
	page, p, err := paginate("creatives", lib, req.Pagination)
	if err != nil {
		return creativesResponse{}, err
	}
	out := creativesResponse{Pagination: p, Creatives: page}
	if out.Creatives == nil {
		out.Creatives = []json.RawMessage{}
	}
	out.QuerySummary.TotalMatching, out.QuerySummary.Returned = len(lib), len(page)
	return out, nil
}
