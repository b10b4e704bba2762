package seller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/adcp-go/idempotency/adcp"
)

// Proposals (AdCP core/proposal.json): get_products in brief mode answers
// the products and a proposal, a media plan that splits a budget across
// them; refine mode answers each change request of its refine array, in
// order, in refinement_applied, and returns the proposals again, a
// finalized one committed with an expiry.
//
// The seller keeps no proposal state. Its one proposal is derived from the
// catalog (the products get_products lists, with a pricing option each),
// so its id names that plan: the same catalog gives the same id, and a
// refine that names an id the catalog no longer gives is answered
// "unable". Asks in words are not interpreted: the seller says so in the
// entry's notes rather than claim a change it did not make.

// proposalHold is how long a finalized (committed) proposal holds its
// pricing.
const proposalHold = 24 * time.Hour

// allocation is a product's share of a proposal's budget
// (core/product-allocation.json).
type allocation struct {
	ProductID            string  `json:"product_id"`
	AllocationPercentage float64 `json:"allocation_percentage"`
	PricingOptionID      string  `json:"pricing_option_id,omitempty"`
	Rationale            string  `json:"rationale,omitempty"`
	Sequence             int     `json:"sequence,omitempty"`
}

// proposal is a media plan (core/proposal.json).
type proposal struct {
	ProposalID     string       `json:"proposal_id"`
	Name           string       `json:"name"`
	Description    string       `json:"description,omitempty"`
	Allocations    []allocation `json:"allocations"`
	ProposalStatus string       `json:"proposal_status,omitempty"`
	ExpiresAt      string       `json:"expires_at,omitempty"`
	BriefAlignment string       `json:"brief_alignment,omitempty"`
}

// refinement is one entry of refinement_applied.
type refinement struct {
	Scope      string `json:"scope"`
	ProductID  string `json:"product_id,omitempty"`
	ProposalID string `json:"proposal_id,omitempty"`
	Status     string `json:"status"`
	Notes      string `json:"notes,omitempty"`
}

// planFor is the proposal for products (as get_products lists them): an
// even split, in whole percent summing to 100, over those with a pricing
// option, each at its first one; ok is false when none has one.
func planFor(products []map[string]any) (proposal, bool) {
	var allocs []allocation
	h := sha256.New()
	for _, p := range products {
		opts := asSlice(p["pricing_options"])
		if len(opts) == 0 {
			continue
		}
		id, _ := p["product_id"].(string)
		opt, _ := opts[0].(map[string]any)
		po, _ := opt["pricing_option_id"].(string)
		allocs = append(allocs, allocation{ProductID: id, PricingOptionID: po, Sequence: len(allocs) + 1,
			Rationale: "an even share of the budget at the product's first pricing option"})
		fmt.Fprintf(h, "%s\x00%s\x00", id, po)
	}
	if len(allocs) == 0 {
		return proposal{}, false
	}
	share := 100 / len(allocs)
	for i := range allocs {
		allocs[i].AllocationPercentage = float64(share)
	}
	allocs[0].AllocationPercentage += float64(100 - share*len(allocs))
	return proposal{
		ProposalID:     "prop_" + hex.EncodeToString(h.Sum(nil)[:8]),
		Name:           fmt.Sprintf("Balanced plan across %d products", len(allocs)),
		Description:    "The budget split evenly across the products on sale; finalize it for firm pricing held for 24 hours.",
		Allocations:    allocs,
		ProposalStatus: "draft",
	}, true
}

// checkRefine validates get_products' refine array.
func checkRefine(entries []refineEntry) error {
	if len(entries) == 0 {
		return badRequest("refine", "buying_mode refine needs a refine array of at least one change request")
	}
	for i, e := range entries {
		field := fmt.Sprintf("refine[%d]", i)
		switch e.Scope {
		case "request":
			if strings.TrimSpace(e.Ask) == "" {
				return badRequest(field+".ask", "a request-scoped change needs an ask")
			}
		case "product":
			if e.ProductID == "" {
				return badRequest(field+".product_id", "a product-scoped change needs a product_id")
			}
			if e.Action != "" && e.Action != "include" && e.Action != "omit" && e.Action != "more_like_this" {
				return badRequest(field+".action", "a product-scoped action is include, omit or more_like_this")
			}
		case "proposal":
			if e.ProposalID == "" {
				return badRequest(field+".proposal_id", "a proposal-scoped change needs a proposal_id")
			}
			if e.Action != "" && e.Action != "include" && e.Action != "omit" && e.Action != "finalize" {
				return badRequest(field+".action", "a proposal-scoped action is include, omit or finalize")
			}
		default:
			return badRequest(field+".scope", "scope must be request, product or proposal")
		}
	}
	return nil
}

// refine applies a refine array to the catalog's products and proposal:
// omitted products and proposals leave the answer, a finalized proposal
// is committed until now + proposalHold, and every entry is answered in
// order.
func refine(entries []refineEntry, products []map[string]any, now time.Time) ([]map[string]any, []proposal, []refinement) {
	omitted := map[string]bool{}
	has := func(id string) bool {
		for _, p := range products {
			if p["product_id"] == id {
				return true
			}
		}
		return false
	}
	const unchanged = "returned unchanged: this seller does not interpret asks in words"
	applied := make([]refinement, len(entries))
	for i, e := range entries {
		r := refinement{Scope: e.Scope, ProductID: e.ProductID, ProposalID: e.ProposalID, Status: "applied"}
		switch e.Scope {
		case "request":
			r.Status, r.Notes = "unable", "the catalog is "+unchanged
		case "product":
			switch {
			case !has(e.ProductID):
				r.Status, r.Notes = "unable", "no product with this product_id; the products in this answer are the ones on sale"
			case e.Action == "omit":
				omitted[e.ProductID] = true
			case e.Action == "more_like_this":
				r.Status, r.Notes = "unable", "this seller has no similar products to add; the product is returned"
			case e.Ask != "":
				r.Status, r.Notes = "unable", "the product is "+unchanged
			}
		}
		applied[i] = r
	}
	var kept []map[string]any
	for _, p := range products {
		if id, _ := p["product_id"].(string); !omitted[id] {
			kept = append(kept, p)
		}
	}
	if kept == nil {
		kept = []map[string]any{}
	}
	plan, ok := planFor(kept)
	keep := ok
	for i, e := range entries {
		if e.Scope != "proposal" {
			continue
		}
		r := &applied[i]
		switch {
		case !ok || e.ProposalID != plan.ProposalID:
			r.Status, r.Notes = "unable", "no current proposal with this proposal_id (proposals follow the catalog); the proposals in this answer are current"
		case e.Action == "omit":
			keep = false
		case e.Action == "finalize":
			plan.ProposalStatus, plan.ExpiresAt = "committed", now.Add(proposalHold).UTC().Format(time.RFC3339)
			if e.Ask != "" {
				r.Status, r.Notes = "partial", "finalized; the ask was not applied: this seller does not interpret asks in words"
			}
		case e.Ask != "":
			r.Status, r.Notes = "unable", "the proposal is "+unchanged
		}
	}
	proposals := []proposal{}
	if keep {
		proposals = append(proposals, plan)
	}
	return kept, proposals, applied
}

// checkBuyingMode validates the members that depend on buying_mode.
func checkBuyingMode(req *getProductsRequest) error {
	switch req.BuyingMode {
	case "", "brief", "refine":
	case "wholesale":
		if req.Brief != "" {
			return badRequest("brief", "buying_mode wholesale takes no brief")
		}
	default:
		return badRequest("buying_mode", "buying_mode must be brief, wholesale or refine")
	}
	if req.BuyingMode == "refine" {
		return checkRefine(req.Refine)
	}
	if len(req.Refine) > 0 {
		return &adcp.Error{Code: "INVALID_REQUEST", Message: "refine is for buying_mode refine only", Recovery: "correctable", Field: "refine"}
	}
	return nil
}
