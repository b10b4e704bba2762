package seller

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/webhook"
)

// create_media_buy, update_media_buy and get_media_buys.
//
// create_media_buy answers in one of two arms:
//
//   - synchronous: the media buy is made in the request's transaction and
//     the answer carries it (AdCP 3.0: its status in "status"; 3.1 and
//     later: in "media_buy_status", "status" being the envelope's
//     "completed"). A 3.0 buyer that registered a webhook also gets a
//     completion webhook, which 3.0 storyboards expect; from 3.1 an inline
//     terminal answer sends none.
//   - submitted: the request's transaction stores a task (and its
//     scheduled completion) and the answer is {status: submitted,
//     task_id}; the media buy is made when the task completes, and the
//     registered webhook reports it. A 3.1+ buyer that registers a webhook
//     gets this arm (a webhook is for work that continues after the
//     answer), and so does the next create after comply_test_controller's
//     force_create_media_buy_arm.
//
// Either way the answer is stored with the request's idempotency_key, so a
// retry gets it back, even after the task completed (rule 2: a replay of
// a submitted answer is the submitted answer). The idempotency key, the
// task id and each webhook's idempotency_key are separate namespaces.

// createMediaBuy is the work of create_media_buy. It runs at most once per
// (principal, account, idempotency_key).
func (s *Seller) createMediaBuy(ctx context.Context, w writer, c *adcp.Call) (any, error) {
	var req createRequest
	if err := c.Decode(&req); err != nil {
		return nil, err
	}
	acct, err := s.resolveAccount(ctx, w, c.Principal, req.Account)
	if err != nil {
		return nil, err
	}
	b, err := s.newBuy(c, acct, &req)
	if err != nil {
		return nil, err
	}
	push, err := s.pushConfig(c, req.PushNotificationConfig)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()

	forced, hasForced := s.controller.takeArm(c.Principal)
	if hasForced || (push != nil && c.Version.AtLeast(adcp.V3_1)) {
		t := task{Principal: c.Principal, Type: "create_media_buy", Status: "submitted", Version: c.Version.String(),
			Buy: &b, Push: push, Context: bytes.Clone(c.Context), CreatedAt: now, UpdatedAt: now}
		t.ID, err = newTaskID(ctx, w, forced.taskID)
		if err != nil {
			return nil, err
		}
		if err := w.putTask(ctx, t, true); err != nil {
			return nil, err
		}
		if !hasForced { // a forced task waits for force_task_completion
			if err := w.schedule(ctx, t.ID, s.cfg.TaskDelay); err != nil {
				return nil, err
			}
		}
		return submittedAnswer{Status: "submitted", TaskID: t.ID, Message: "the media buy is being set up; get_task_status or the registered webhook reports the outcome", IdempotencyKey: c.Key}, nil
	}

	if err := w.putBuy(ctx, b, true); err != nil {
		return nil, err
	}
	answer := buyAnswer(b, c.Version, c.Key)
	if push != nil { // AdCP 3.0: the completion webhook of a synchronous create
		t := task{ID: "task_" + randomHex(10), Principal: c.Principal, Type: "create_media_buy", Status: "completed", Version: c.Version.String(),
			Push: push, Context: bytes.Clone(c.Context), Result: mustJSON(buyAnswer(b, c.Version, "")), CreatedAt: now, UpdatedAt: now, CompletedAt: &now}
		if err := w.putTask(ctx, t, true); err != nil {
			return nil, err
		}
		if err := s.notifyTask(ctx, w, &t); err != nil {
			return nil, err
		}
	}
	return answer, nil
}

// submittedAnswer is create_media_buy's submitted arm.
type submittedAnswer struct {
	Status         string `json:"status"`
	TaskID         string `json:"task_id"`
	Message        string `json:"message"`
	IdempotencyKey string `json:"idempotency_key"`
}

// buyAnswer is a media buy as create_media_buy and its task's result
// answer it, at version v; key, when set, is echoed (the storyboards read
// it back from the answer).
func buyAnswer(b mediaBuy, v adcp.Version, key string) buyResponse {
	r := buyResponse{
		Account: b.Account, ConfirmedAt: b.ConfirmedAt.Format(time.RFC3339), Currency: b.Currency, IdempotencyKey: key,
		MediaBuyID: b.ID, Name: b.Name, Packages: b.Packages, Revision: b.Revision, TotalBudget: b.TotalBudget,
	}
	status := b.Status
	if v.AtLeast(adcp.V3_1) {
		r.MediaBuyStatus = &status
	} else {
		r.Status = &status
	}
	return r
}

// buyResponse is buyAnswer's answer. Its members are in name order, the
// order json.Marshal gave the map it replaced, so that it encodes to the
// same bytes; the two statuses are pointers because exactly one is
// present, empty or not.
type buyResponse struct {
	Account        account `json:"account"`
	ConfirmedAt    string  `json:"confirmed_at"`
	Currency       string  `json:"currency"`
	IdempotencyKey string  `json:"idempotency_key,omitempty"`
	MediaBuyID     string  `json:"media_buy_id"`
	MediaBuyStatus *string `json:"media_buy_status,omitempty"`
	Name           string  `json:"name,omitempty"`
	Packages       []pkg   `json:"packages"`
	Revision       int     `json:"revision"`
	Status         *string `json:"status,omitempty"`
	TotalBudget    float64 `json:"total_budget"`
}

// resolveAccount finds the request's account: by account_id among the
// principal's accounts, or by natural key (brand + operator), which opens
// the account implicitly.
func (s *Seller) resolveAccount(ctx context.Context, w writer, principal string, ref *accountRef) (account, error) {
	switch {
	case ref == nil:
		return account{}, badRequest("account", "account is required: an account_id from list_accounts, or brand and operator")
	case ref.AccountID != "":
		a, ok, err := w.account(ctx, principal, ref.AccountID)
		if err != nil {
			return account{}, err
		}
		if !ok {
			return account{}, &adcp.Error{Code: "ACCOUNT_NOT_FOUND", Message: "no account with this account_id for the caller; list_accounts lists them", Recovery: "correctable", Field: "account.account_id"}
		}
		return a, nil
	case ref.Brand == nil || ref.Brand.Domain == "" || ref.Operator == "":
		return account{}, badRequest("account", "account needs account_id, or brand.domain and operator")
	}
	return naturalAccount(ref), nil
}

// naturalAccount is the account a natural key names. Its id is derived
// from the key, so the same brand and operator always name one account.
func naturalAccount(ref *accountRef) account {
	sum := sha256.Sum256([]byte(strings.ToLower(ref.Brand.Domain) + "\x00" + ref.Brand.BrandID + "\x00" + strings.ToLower(ref.Operator)))
	name := ref.Brand.Domain
	if !strings.EqualFold(ref.Operator, ref.Brand.Domain) {
		name += " c/o " + ref.Operator
	}
	b := *ref.Brand
	return account{AccountID: "acc_" + hex.EncodeToString(sum[:8]), Name: name, Status: "active", Brand: &b, Operator: ref.Operator, Sandbox: ref.Sandbox}
}

// newBuy validates a create request and makes its media buy. It touches no
// storage.
func (s *Seller) newBuy(c *adcp.Call, acct account, req *createRequest) (mediaBuy, error) {
	if req.ProposalID != "" {
		return mediaBuy{}, &adcp.Error{Code: "UNSUPPORTED_FEATURE", Message: "this seller does not sell proposals; send packages", Recovery: "correctable", Field: "proposal_id"}
	}
	if len(req.Packages) == 0 {
		return mediaBuy{}, badRequest("packages", "packages must list at least one package")
	}
	if len(req.Packages) > 50 {
		return mediaBuy{}, badRequest("packages", "at most 50 packages per media buy")
	}
	if err := checkFlight(req.StartTime, req.EndTime); err != nil {
		return mediaBuy{}, err
	}
	if req.Name != "" && len(req.Name) > 255 {
		return mediaBuy{}, badRequest("name", "name must be at most 255 characters")
	}
	id := "mb_" + randomHex(8)
	b := mediaBuy{ID: id, Principal: c.Principal, Account: acct, Name: req.Name, Status: "pending_creatives",
		StartTime: req.StartTime, EndTime: req.EndTime, Revision: 1, ConfirmedAt: time.Now().UTC().Truncate(time.Second)}
	for i, p := range req.Packages {
		field := "packages[" + strconv.Itoa(i) + "]"
		po, err := s.checkPackage(field, p)
		if err != nil {
			return mediaBuy{}, err
		}
		switch {
		case b.Currency == "":
			b.Currency = po.Currency
		case b.Currency != po.Currency:
			return mediaBuy{}, badRequest(field+".pricing_option_id", "all packages of a media buy must be priced in one currency")
		}
		b.Packages = append(b.Packages, pkg{PackageID: id + "_p" + strconv.Itoa(i+1), ProductID: p.ProductID,
			PricingOptionID: p.PricingOptionID, Budget: *p.Budget, BidPrice: p.BidPrice, Paused: p.Paused,
			Targeting: present(p.Targeting), Measurement: present(p.MeasurementTerm)})
		b.TotalBudget += *p.Budget
	}
	return b, nil
}

// checkPackage validates one package against the catalog.
func (s *Seller) checkPackage(field string, p packageRequest) (pricingOption, error) {
	switch {
	case p.ProductID == "":
		return pricingOption{}, badRequest(field+".product_id", "product_id is required")
	case p.PricingOptionID == "":
		return pricingOption{}, badRequest(field+".pricing_option_id", "pricing_option_id is required")
	case p.Budget == nil:
		return pricingOption{}, badRequest(field+".budget", "budget is required")
	case !(*p.Budget > 0) || math.IsInf(*p.Budget, 0):
		return pricingOption{}, badRequest(field+".budget", "budget must be a positive amount")
	case present(p.Targeting) != nil && !isObject(p.Targeting):
		return pricingOption{}, badRequest(field+".targeting_overlay", "targeting_overlay must be an object")
	}
	if err := checkMeasurementTerms(field+".measurement_terms", present(p.MeasurementTerm)); err != nil {
		return pricingOption{}, err
	}
	po, product, ok := s.catalog.pricing(p.ProductID, p.PricingOptionID)
	switch {
	case !product:
		return po, &adcp.Error{Code: "PRODUCT_NOT_FOUND", Message: "no product with this product_id; get_products lists them", Recovery: "correctable", Field: field + ".product_id"}
	case !ok:
		return po, &adcp.Error{Code: "INVALID_PRICING_OPTION", Message: "the product has no pricing option with this pricing_option_id", Recovery: "correctable", Field: field + ".pricing_option_id"}
	case po.MinSpend != nil && *p.Budget < *po.MinSpend:
		return po, &adcp.Error{Code: "BUDGET_TOO_LOW", Message: fmt.Sprintf("the pricing option's minimum spend per package is %g %s", *po.MinSpend, po.Currency), Recovery: "correctable", Field: field + ".budget"}
	case po.Fixed == nil && po.Floor != nil && p.BidPrice != nil && *p.BidPrice < *po.Floor:
		return po, &adcp.Error{Code: "INVALID_REQUEST", Message: fmt.Sprintf("bid_price is below the pricing option's floor of %g", *po.Floor), Recovery: "correctable", Field: field + ".bid_price"}
	}
	if po.Currency == "" {
		po.Currency = "USD"
	}
	return po, nil
}

// checkFlight validates the flight. Dates in the past are accepted: the
// compliance runner sends sample dates that may have gone by (sandbox).
func checkFlight(start, end string) error {
	var st time.Time
	switch {
	case start == "":
		return badRequest("start_time", "start_time is required: asap or an RFC 3339 date-time")
	case start == "asap":
		st = time.Now()
	default:
		t, err := time.Parse(time.RFC3339, start)
		if err != nil {
			return badRequest("start_time", "start_time must be asap or an RFC 3339 date-time")
		}
		st = t
	}
	if end == "" {
		return badRequest("end_time", "end_time is required: an RFC 3339 date-time")
	}
	et, err := time.Parse(time.RFC3339, end)
	if err != nil {
		return badRequest("end_time", "end_time must be an RFC 3339 date-time")
	}
	if !et.After(st) {
		return badRequest("end_time", "end_time must be after start_time")
	}
	return nil
}

// pushConfig validates the webhook registration. AdCP 3.1 and later
// require operation_id; a 3.0 buyer's registration without one gets the
// task's id in its webhooks, never something parsed from the URL (which is
// opaque to the seller).
func (s *Seller) pushConfig(c *adcp.Call, pc *pushConfig) (*webhook.PushNotificationConfig, error) {
	if pc == nil {
		return nil, nil
	}
	cfg := webhook.PushNotificationConfig{URL: pc.URL, OperationID: pc.OperationID, Token: pc.Token}
	if cfg.OperationID == "" && !c.Version.AtLeast(adcp.V3_1) {
		cfg.OperationID = "op_" + randomHex(10)
	}
	if err := cfg.Validate(s.urls); err != nil {
		var ce *webhook.ConfigError
		if errors.As(err, &ce) {
			return nil, &adcp.Error{Code: "INVALID_REQUEST", Message: ce.Error(), Recovery: "correctable", Field: "push_notification_config"}
		}
		return nil, badRequest("push_notification_config", "push_notification_config is not valid")
	}
	return &cfg, nil
}

// updateMediaBuy is the work of update_media_buy: pause, resume or cancel
// the buy or its packages, change package budgets or the end of the
// flight. It runs at most once per key, like create_media_buy; a change
// based on a stale revision is CONFLICT.
func (s *Seller) updateMediaBuy(ctx context.Context, w writer, c *adcp.Call) (any, error) {
	var req updateRequest
	if err := c.Decode(&req); err != nil {
		return nil, err
	}
	if req.MediaBuyID == "" {
		return nil, badRequest("media_buy_id", "media_buy_id is required")
	}
	b, ok, err := w.buy(ctx, c.Principal, req.MediaBuyID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &adcp.Error{Code: "MEDIA_BUY_NOT_FOUND", Message: "no media buy with this media_buy_id for the caller", Recovery: "correctable", Field: "media_buy_id"}
	}
	if req.Account != nil {
		acct, err := s.resolveAccount(ctx, w, c.Principal, req.Account)
		if err != nil {
			return nil, err
		}
		if acct.AccountID != b.Account.AccountID {
			return nil, &adcp.Error{Code: "MEDIA_BUY_NOT_FOUND", Message: "no media buy with this media_buy_id under this account", Recovery: "correctable", Field: "media_buy_id"}
		}
	}
	if req.Revision != 0 && req.Revision != b.Revision {
		return nil, &adcp.Error{Code: "CONFLICT", Message: fmt.Sprintf("the media buy is at revision %d; read it again and resend the change", b.Revision), Recovery: "correctable", Field: "revision"}
	}
	if b.Status == "canceled" || b.Status == "completed" || b.Status == "rejected" {
		return nil, &adcp.Error{Code: "INVALID_STATE", Message: "the media buy is " + b.Status + " and can no longer change", Recovery: "terminal"}
	}
	var affected []string
	for i, u := range req.Packages {
		field := "packages[" + strconv.Itoa(i) + "]"
		j := slices.IndexFunc(b.Packages, func(p pkg) bool { return p.PackageID == u.PackageID })
		if j < 0 {
			return nil, &adcp.Error{Code: "PACKAGE_NOT_FOUND", Message: "the media buy has no package with this package_id", Recovery: "correctable", Field: field + ".package_id"}
		}
		p := &b.Packages[j]
		if u.Budget != nil {
			if !(*u.Budget > 0) || math.IsInf(*u.Budget, 0) {
				return nil, badRequest(field+".budget", "budget must be a positive amount")
			}
			b.TotalBudget += *u.Budget - p.Budget
			p.Budget = *u.Budget
		}
		if u.Paused != nil {
			p.Paused = *u.Paused
		}
		if t := present(u.Targeting); t != nil {
			if !isObject(t) {
				return nil, badRequest(field+".targeting_overlay", "targeting_overlay must be an object")
			}
			p.Targeting = t
		}
		affected = append(affected, p.PackageID)
	}
	if req.EndTime != "" {
		if err := checkFlight(b.StartTime, req.EndTime); err != nil {
			return nil, err
		}
		b.EndTime = req.EndTime
	}
	switch {
	case req.Canceled:
		b.Status = "canceled"
	case req.Paused != nil && *req.Paused:
		b.Status = "paused"
	case req.Paused != nil && b.Status == "paused":
		// The media buy lifecycle has no edge from paused back to
		// pending_creatives: a resumed buy is active (AdCP's
		// media-buy-status enum: paused -> active, canceled, completed).
		b.Status = "active"
	}
	b.Revision++
	if err := w.putBuy(ctx, b, false); err != nil {
		return nil, err
	}
	out := map[string]any{"media_buy_id": b.ID, "revision": b.Revision, "affected_packages": affectedPackages(b, affected),
		"implementation_date": time.Now().UTC().Format(time.RFC3339)}
	if c.Version.AtLeast(adcp.V3_1) {
		out["media_buy_status"] = b.Status
	} else {
		out["status"] = b.Status
	}
	return out, nil
}

func affectedPackages(b mediaBuy, ids []string) []pkg {
	out := []pkg{}
	for _, p := range b.Packages {
		if slices.Contains(ids, p.PackageID) {
			out = append(out, p)
		}
	}
	return out
}

type getMediaBuysResponse struct {
	MediaBuys  []mediaBuyOut `json:"media_buys"`
	Pagination pagination    `json:"pagination"`
}

// mediaBuyOut is a media buy as get_media_buys lists it ("status" here is
// the media buy's own status, inside the payload, not the envelope's).
type mediaBuyOut struct {
	mediaBuy
	ConfirmedAt string `json:"confirmed_at"`
}

// getMediaBuys is get_media_buys: the caller's media buys, all or those
// named, optionally within one account.
func (s *Seller) getMediaBuys(ctx context.Context, c *adcp.Call) (getMediaBuysResponse, error) {
	var req getMediaBuysRequest
	if err := c.Decode(&req); err != nil {
		return getMediaBuysResponse{}, err
	}
	if len(req.MediaBuyIDs) > 100 {
		return getMediaBuysResponse{}, badRequest("media_buy_ids", "at most 100 media_buy_ids per call")
	}
	buys, err := s.store.buys(ctx, c.Principal, req.MediaBuyIDs)
	if err != nil {
		return getMediaBuysResponse{}, err
	}
	out := getMediaBuysResponse{MediaBuys: []mediaBuyOut{}}
	acct := accountKey(req.Account)
	var all []mediaBuyOut
	for _, b := range buys {
		if acct == "" || b.Account.AccountID == acct {
			all = append(all, mediaBuyOut{mediaBuy: b, ConfirmedAt: b.ConfirmedAt.Format(time.RFC3339)})
		}
	}
	page, p, err := paginate("media_buys", all, req.Pagination)
	if err != nil {
		return getMediaBuysResponse{}, err
	}
	if page != nil {
		out.MediaBuys = page
	}
	out.Pagination = p
	return out, nil
}

func badRequest(field, msg string) *adcp.Error {
	return &adcp.Error{Code: "INVALID_REQUEST", Message: msg, Recovery: "correctable", Field: field}
}

// Measurement terms this seller accepts: a billing-measurement variance
// tolerance of at least minVariancePercent, over a window no longer than
// seven days after airing.
const minVariancePercent = 10

var acceptedWindows = []string{"live", "c3", "c7"}

// checkMeasurementTerms accepts a package's proposed measurement_terms
// (nil: none proposed) within this seller's tolerance and refuses anything
// stricter, or any term it does not negotiate, with TERMS_REJECTED, saying
// what would be accepted.
func checkMeasurementTerms(field string, raw json.RawMessage) error {
	if raw == nil {
		return nil
	}
	var terms struct {
		Billing *struct {
			Window      *string  `json:"measurement_window"`
			MaxVariance *float64 `json:"max_variance_percent"`
		} `json:"billing_measurement"`
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil || members == nil || json.Unmarshal(raw, &terms) != nil {
		return badRequest(field, "measurement_terms must be an object")
	}
	for name := range members {
		if name != "billing_measurement" && name != "makegood_policy" {
			return &adcp.Error{Code: "TERMS_REJECTED", Recovery: "correctable", Field: field,
				Message: "this seller negotiates billing_measurement and makegood_policy only"}
		}
	}
	if b := terms.Billing; b != nil {
		if (b.MaxVariance != nil && *b.MaxVariance < minVariancePercent) || (b.Window != nil && !slices.Contains(acceptedWindows, *b.Window)) {
			return &adcp.Error{Code: "TERMS_REJECTED", Recovery: "correctable", Field: field,
				Message: fmt.Sprintf("this seller guarantees billing measurement within a max_variance_percent of %d or more, over a measurement_window of live, c3 or c7", minVariancePercent)}
		}
	}
	return nil
}

// present returns raw, or nil when it is absent or JSON null.
func present(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}

// isObject reports whether raw is a JSON object.
func isObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && m != nil
}
