package seller

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"

	"github.com/adcp-go/idempotency/adcp"
)

// sync_accounts and list_accounts (AdCP accounts protocol).
//
// This seller takes buyer-declared accounts (require_operator_auth false):
// an account is named by its natural key, brand + operator, and its id is
// derived from that key (naturalAccount). sync_accounts provisions
// accounts ahead of the first media buy, active at once; it is mutating,
// so it runs through the idempotency layer like create_media_buy
// (idempotency_key required, a retry replays the first answer, the same
// key with another payload is IDEMPOTENCY_CONFLICT), and its writes
// commit with the stored answer.

// supportedBilling are the billing models sync_accounts accepts (the
// capabilities' account.supported_billing).
var supportedBilling = []string{"operator"}

// paymentTerms are AdCP's payment terms (enums/payment-terms.json); this
// sandbox seller agrees to any of them, and to net_30 when none is asked.
var paymentTerms = []string{"net_15", "net_30", "net_45", "net_60", "net_90", "prepay"}

// accountStatuses are AdCP's account statuses (list_accounts' status
// filter, force_account_status).
var accountStatuses = []string{"active", "pending_approval", "rejected", "payment_required", "suspended", "closed"}

// operatorDomain is sync_accounts' pattern for operator (a lower-case
// domain).
var operatorDomain = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// maxSyncAccounts is sync_accounts' maxItems.
const maxSyncAccounts = 1000

type syncAccountsResponse struct {
	DryRun   bool         `json:"dry_run,omitempty"`
	Accounts []syncResult `json:"accounts"`
}

// syncResult is one account of sync_accounts' answer.
type syncResult struct {
	account
	AccountID string        `json:"account_id,omitempty"`
	Action    string        `json:"action"`
	Errors    []*adcp.Error `json:"errors,omitempty"`
}

// syncAccounts is the work of sync_accounts. It runs at most once per
// (principal, idempotency_key). A malformed request is refused whole and
// changes nothing; an account with a billing model this seller does not
// offer is answered failed (BILLING_NOT_SUPPORTED) and the others are
// synced.
func (s *Seller) syncAccounts(ctx context.Context, w writer, c *adcp.Call) (any, error) {
	var req syncAccountsRequest
	if err := c.Decode(&req); err != nil {
		return nil, err
	}
	switch {
	case len(req.Accounts) == 0:
		return nil, badRequest("accounts", "accounts must list at least one account")
	case len(req.Accounts) > maxSyncAccounts:
		return nil, badRequest("accounts", fmt.Sprintf("at most %d accounts per sync_accounts", maxSyncAccounts))
	case req.DeleteMissing:
		return nil, &adcp.Error{Code: "UNSUPPORTED_FEATURE", Message: "this seller does not deactivate accounts by omission: omit delete_missing (or send false)", Recovery: "correctable", Field: "delete_missing"}
	}
	// wants are the accounts the request names (an account's id depends on
	// its brand and operator only).
	wants := make([]account, len(req.Accounts))
	seen := map[string]int{}
	for i, a := range req.Accounts {
		field := fmt.Sprintf("accounts[%d]", i)
		switch {
		case a.Brand == nil || a.Brand.Domain == "":
			return nil, badRequest(field+".brand.domain", "each account needs brand.domain")
		case !operatorDomain.MatchString(a.Operator):
			return nil, badRequest(field+".operator", "each account needs operator, a lower-case domain such as pinnacle-media.com")
		case a.Billing == "":
			return nil, badRequest(field+".billing", "each account needs billing: operator, agent or advertiser")
		case a.Billing != "operator" && a.Billing != "agent" && a.Billing != "advertiser":
			return nil, badRequest(field+".billing", "billing must be operator, agent or advertiser")
		case a.PaymentTerms != "" && !slices.Contains(paymentTerms, a.PaymentTerms):
			return nil, badRequest(field+".payment_terms", "payment_terms must be one of net_15, net_30, net_45, net_60, net_90 or prepay")
		}
		wants[i] = naturalAccount(&accountRef{Brand: a.Brand, Operator: a.Operator, Sandbox: a.Sandbox})
		if j, dup := seen[wants[i].AccountID]; dup {
			return nil, badRequest(field, fmt.Sprintf("accounts[%d] names the same brand and operator", j))
		}
		seen[wants[i].AccountID] = i
	}

	out := syncAccountsResponse{DryRun: req.DryRun, Accounts: make([]syncResult, 0, len(req.Accounts))}
	for i, a := range req.Accounts {
		want := wants[i]
		if !slices.Contains(supportedBilling, a.Billing) {
			out.Accounts = append(out.Accounts, syncResult{account: account{Brand: want.Brand, Operator: want.Operator, Status: "rejected", Sandbox: a.Sandbox},
				Action: "failed", Errors: []*adcp.Error{{Code: "BILLING_NOT_SUPPORTED", Recovery: "correctable", Field: "billing",
					Message: "this seller invoices the operator only: send billing operator"}}})
			continue
		}
		old, exists, err := w.accountForUpdate(ctx, c.Principal, want.AccountID)
		if err != nil {
			return nil, err
		}
		next := want
		next.Billing, next.AccountScope, next.PaymentTerms = a.Billing, "operator_brand", cmp.Or(a.PaymentTerms, "net_30")
		action := "created"
		if exists {
			// A sync changes the terms, never the status (which the
			// seller owns).
			next.Name, next.Status = old.Name, old.Status
			action = "updated"
			if old.Billing == next.Billing && old.PaymentTerms == next.PaymentTerms && old.Sandbox == next.Sandbox && old.AccountScope == next.AccountScope {
				action = "unchanged"
			}
		}
		if action != "unchanged" && !req.DryRun {
			if err := w.putAccount(ctx, c.Principal, next); err != nil {
				return nil, err
			}
		}
		out.Accounts = append(out.Accounts, syncResult{account: next, AccountID: next.AccountID, Action: action})
	}
	return out, nil
}

type accountsResponse struct {
	Accounts   []account  `json:"accounts"`
	Pagination pagination `json:"pagination"`
}

// listAccounts is list_accounts: a page of the caller's accounts (synced,
// or opened by a media buy), oldest first, narrowed by status and sandbox
// when asked.
func (s *Seller) listAccounts(ctx context.Context, c *adcp.Call) (accountsResponse, error) {
	var req listAccountsRequest
	if err := c.Decode(&req); err != nil {
		return accountsResponse{}, err
	}
	if req.Status != "" && !slices.Contains(accountStatuses, req.Status) {
		return accountsResponse{}, badRequest("status", "status must be one of active, pending_approval, rejected, payment_required, suspended or closed")
	}
	accts, err := s.store.accounts(ctx, c.Principal)
	if err != nil {
		return accountsResponse{}, err
	}
	matching := []account{}
	for _, a := range accts {
		if (req.Status == "" || a.Status == req.Status) && (req.Sandbox == nil || a.Sandbox == *req.Sandbox) {
			matching = append(matching, a)
		}
	}
	page, p, err := paginate("accounts", matching, req.Pagination)
	if err != nil {
		return accountsResponse{}, err
	}
	return accountsResponse{Accounts: page, Pagination: p}, nil
}
