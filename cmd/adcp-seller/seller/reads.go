package seller

import (
	"context"
	"encoding/json"
	"time"

	"github.com/adcp-go/idempotency/adcp"
)

// The reads. Each is served through adcp.Read: a read that carries an
// idempotency_key is answered once and replayed for that key (AdCP 3.2);
// one without a key simply runs.

type productsResponse struct {
	Products          []map[string]any `json:"products"`
	Proposals         []proposal       `json:"proposals,omitempty"`
	RefinementApplied []refinement     `json:"refinement_applied,omitempty"`
}

// getProducts is get_products: the catalog, narrowed by the filters it
// understands; in brief mode with the catalog's proposal, in refine mode
// with the refine array applied (proposals.go). It always answers
// synchronously, so a webhook registration is refused as a well-formed
// request this seller does not support (AdCP 3.2 allows that or accepting
// it and sending nothing; the refusal is what a buyer can act on).
func (s *Seller) getProducts(_ context.Context, c *adcp.Call) (productsResponse, error) {
	var req getProductsRequest
	if err := c.Decode(&req); err != nil {
		return productsResponse{}, err
	}
	if len(req.PushNotificationConfig) > 0 && string(req.PushNotificationConfig) != "null" {
		return productsResponse{}, badRequest("push_notification_config", "get_products always answers synchronously and sends no webhook: omit push_notification_config")
	}
	if err := checkBuyingMode(&req); err != nil {
		return productsResponse{}, err
	}
	var dt string
	var channels []string
	if req.Filters != nil {
		dt, channels = req.Filters.DeliveryType, req.Filters.Channels
	}
	products := s.catalog.productList(dt, channels)
	switch {
	case req.BuyingMode == "refine":
		out := productsResponse{}
		out.Products, out.Proposals, out.RefinementApplied = refine(req.Refine, products, time.Now())
		return out, nil
	case req.BuyingMode == "brief" || (req.BuyingMode == "" && req.Brief != ""):
		// Pre-v3 buyers send no buying_mode; a brief means brief mode.
		out := productsResponse{Products: products}
		if plan, ok := planFor(products); ok {
			plan.BriefAlignment = "covers every product on sale that matches the request's filters; the brief's words are not interpreted"
			out.Proposals = []proposal{plan}
		}
		return out, nil
	}
	return productsResponse{Products: products}, nil
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
