package seller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/adcp-go/idempotency/adcp"
)

// comply_test_controller: the AdCP test controller, with which compliance
// storyboards seed fixtures and steer the seller into states they test.
// Only sandbox principals (Config.Sandbox) may call it; it is not
// registered at all when there are none. Its answers are the controller's
// own shape, {success, ...} or {success: false, error, error_detail}.

// controllerScenarios are the scenarios this seller implements, as
// list_scenarios and the capabilities' compliance_testing block list them.
var controllerScenarios = []string{
	"force_create_media_buy_arm",
	"force_task_completion",
	"seed_product",
	"seed_pricing_option",
	"seed_creative_format",
	"seed_media_buy",
	"seed_creative",
	"force_creative_status",
	"force_account_status",
	"force_media_buy_status",
	"simulate_delivery",
}

// terminalBuyStatuses are the media buy statuses no transition leaves.
var terminalBuyStatuses = []string{"completed", "rejected", "canceled"}

// controller keeps what force_create_media_buy_arm arms: the arm the next
// create_media_buy of a principal takes.
type controller struct {
	mu   sync.Mutex
	arms map[string]forcedArm // by principal
}

type forcedArm struct{ taskID string }

// takeArm returns and disarms principal's forced arm.
func (c *controller) takeArm(principal string) (forcedArm, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.arms[principal]
	delete(c.arms, principal)
	return a, ok
}

func (c *controller) arm(principal string, a forcedArm) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.arms == nil {
		c.arms = map[string]forcedArm{}
	}
	c.arms[principal] = a
}

// controllerResult is a controller answer.
type controllerResult struct {
	Success       bool     `json:"success"`
	Scenarios     []string `json:"scenarios,omitempty"`
	Message       string   `json:"message,omitempty"`
	PreviousState string   `json:"previous_state,omitempty"`
	CurrentState  string   `json:"current_state,omitempty"`
	Forced        *forced  `json:"forced,omitempty"`
	// Simulated and Cumulative are simulate_delivery's: what the call
	// injected, and the media buy's running totals after it.
	Simulated   *simulated `json:"simulated,omitempty"`
	Cumulative  *simulated `json:"cumulative,omitempty"`
	Error       string     `json:"error,omitempty"`
	ErrorDetail string     `json:"error_detail,omitempty"`
}

// forced echoes the directive force_create_media_buy_arm registered.
type forced struct {
	Arm    string `json:"arm"`
	TaskID string `json:"task_id,omitempty"`
}

func refused(code, detail string) controllerResult {
	return controllerResult{Error: code, ErrorDetail: detail}
}

// comply is comply_test_controller.
func (s *Seller) comply(ctx context.Context, c *adcp.Call) (controllerResult, error) {
	if !s.cfg.Sandbox[c.Principal] {
		return refused("FORBIDDEN", "comply_test_controller is for sandbox principals only"), nil
	}
	var req controllerRequest
	if err := c.Decode(&req); err != nil {
		return controllerResult{}, err
	}
	var p struct {
		ProductID       string          `json:"product_id"`
		MediaBuyID      string          `json:"media_buy_id"`
		PricingOptionID string          `json:"pricing_option_id"`
		FormatID        string          `json:"format_id"`
		TaskID          string          `json:"task_id"`
		CreativeID      string          `json:"creative_id"`
		AccountID       string          `json:"account_id"`
		Status          string          `json:"status"`
		Arm             string          `json:"arm"`
		Fixture         json.RawMessage `json:"fixture"`
		Result          json.RawMessage `json:"result"`
		simulateParams
	}
	if len(req.Params) > 0 && string(req.Params) != "null" {
		if err := json.Unmarshal(req.Params, &p); err != nil {
			return refused("INVALID_PARAMS", "params must be an object of the scenario's parameters"), nil
		}
	}
	var fixture map[string]any
	if len(p.Fixture) > 0 && string(p.Fixture) != "null" {
		if err := json.Unmarshal(p.Fixture, &fixture); err != nil {
			return refused("INVALID_PARAMS", "params.fixture must be an object"), nil
		}
	}
	seeded := func(fresh bool, err error) (controllerResult, error) {
		var se *seedError
		if errors.As(err, &se) {
			return refused(se.Code, se.Detail), nil
		}
		if fresh {
			return controllerResult{Success: true, Message: "Fixture seeded"}, nil
		}
		return controllerResult{Success: true, Message: "Fixture re-seeded (equivalent)"}, nil
	}

	switch req.Scenario {
	case "":
		return refused("INVALID_PARAMS", "scenario is required"), nil
	case "list_scenarios":
		return controllerResult{Success: true, Scenarios: controllerScenarios}, nil
	case "seed_product":
		if p.ProductID == "" {
			return refused("INVALID_PARAMS", "seed_product requires params.product_id"), nil
		}
		return seeded(s.catalog.seedProduct(p.ProductID, fixture))
	case "seed_pricing_option":
		if p.ProductID == "" || p.PricingOptionID == "" {
			return refused("INVALID_PARAMS", "seed_pricing_option requires params.product_id and params.pricing_option_id"), nil
		}
		return seeded(s.catalog.seedPricingOption(p.ProductID, p.PricingOptionID, fixture))
	case "seed_creative_format":
		if p.FormatID == "" {
			return refused("INVALID_PARAMS", "seed_creative_format requires params.format_id"), nil
		}
		return seeded(s.catalog.seedFormat(accountKey(req.Account), p.FormatID, fixture))
	case "seed_media_buy":
		if p.MediaBuyID == "" {
			return refused("INVALID_PARAMS", "seed_media_buy requires params.media_buy_id"), nil
		}
		b, se := seededBuy(c.Principal, p.MediaBuyID, req.Account, p.Fixture)
		if se != nil {
			return refused(se.Code, se.Detail), nil
		}
		return seeded(s.store.seedBuy(ctx, b))
	case "force_create_media_buy_arm":
		switch {
		case p.Arm != "submitted":
			return refused("INVALID_PARAMS", "force_create_media_buy_arm: this seller implements arm 'submitted' only"), nil
		case !taskIDPattern.MatchString(p.TaskID):
			return refused("INVALID_PARAMS", "force_create_media_buy_arm with arm 'submitted' requires params.task_id (1 to 255 of A-Za-z0-9_.:-)"), nil
		}
		s.controller.arm(c.Principal, forcedArm{taskID: p.TaskID})
		return controllerResult{Success: true, Message: "the next create_media_buy answers submitted with this task_id",
			Forced: &forced{Arm: p.Arm, TaskID: p.TaskID}}, nil
	case "seed_creative":
		if p.CreativeID == "" {
			return refused("INVALID_PARAMS", "seed_creative requires params.creative_id"), nil
		}
		cr, se := seededCreative(p.CreativeID, fixture)
		if se != nil {
			return refused(se.Code, se.Detail), nil
		}
		return seeded(s.store.putCreative(ctx, c.Principal, p.CreativeID, mustJSON(cr)))
	case "force_creative_status":
		// The library holds the creatives seed_creative seeded (this
		// seller takes none from buyers: it has no sync_creatives).
		if p.CreativeID == "" || p.Status == "" {
			return refused("INVALID_PARAMS", "force_creative_status requires params.creative_id and params.status"), nil
		}
		if !slices.Contains(creativeStatuses, p.Status) {
			return refused("INVALID_PARAMS", "params.status must be one of "+strings.Join(creativeStatuses, ", ")), nil
		}
		cr, ok, err := s.creative(ctx, c.Principal, p.CreativeID)
		if err != nil {
			return controllerResult{}, err
		}
		if !ok {
			return refused("NOT_FOUND", "no creative with this creative_id in the caller's library (seed_creative adds creatives)"), nil
		}
		prev, _ := cr["status"].(string)
		cr["status"], cr["updated_date"] = p.Status, time.Now().UTC().Format(time.RFC3339)
		if _, err := s.store.putCreative(ctx, c.Principal, p.CreativeID, mustJSON(cr)); err != nil {
			return controllerResult{}, err
		}
		return controllerResult{Success: true, PreviousState: prev, CurrentState: p.Status}, nil
	case "force_account_status":
		if p.AccountID == "" || p.Status == "" {
			return refused("INVALID_PARAMS", "force_account_status requires params.account_id and params.status"), nil
		}
		if !slices.Contains(accountStatuses, p.Status) {
			return refused("INVALID_PARAMS", "params.status must be one of "+strings.Join(accountStatuses, ", ")), nil
		}
		prev, ok, err := s.store.setAccountStatus(ctx, c.Principal, p.AccountID, p.Status)
		if err != nil {
			return controllerResult{}, err
		}
		if !ok {
			return refused("NOT_FOUND", "no account with this account_id for the caller (sync_accounts provisions accounts)"), nil
		}
		return controllerResult{Success: true, PreviousState: prev, CurrentState: p.Status}, nil
	case "force_media_buy_status":
		if p.MediaBuyID == "" || p.Status == "" {
			return refused("INVALID_PARAMS", "force_media_buy_status requires params.media_buy_id and params.status"), nil
		}
		if !slices.Contains(seedBuyStatuses, p.Status) {
			return refused("INVALID_PARAMS", "params.status must be one of "+strings.Join(seedBuyStatuses, ", ")), nil
		}
		buys, err := s.store.buys(ctx, c.Principal, []string{p.MediaBuyID})
		if err != nil {
			return controllerResult{}, err
		}
		if len(buys) == 0 {
			return refused("NOT_FOUND", "no media buy with this media_buy_id for the caller"), nil
		}
		b := buys[0]
		if slices.Contains(terminalBuyStatuses, b.Status) {
			return refused("INVALID_TRANSITION", "the media buy is "+b.Status+", a terminal status"), nil
		}
		// Read, then written by seedBuy: a sandbox tool, not guarded
		// against an update_media_buy of the same buy in between.
		prev := b.Status
		b.Status = p.Status
		b.Revision++
		if _, err := s.store.seedBuy(ctx, b); err != nil {
			return controllerResult{}, err
		}
		return controllerResult{Success: true, PreviousState: prev, CurrentState: p.Status}, nil
	case "simulate_delivery":
		return s.simulateDelivery(ctx, c.Principal, p.MediaBuyID, p.simulateParams)
	case "force_task_completion":
		var result map[string]any
		switch {
		case !taskIDPattern.MatchString(p.TaskID):
			return refused("INVALID_PARAMS", "force_task_completion requires params.task_id (1 to 255 of A-Za-z0-9_.:-)"), nil
		case len(p.Result) == 0 || json.Unmarshal(p.Result, &result) != nil || result == nil:
			return refused("INVALID_PARAMS", "force_task_completion requires params.result, the completion payload object"), nil
		}
		t, ok, err := s.store.task(ctx, c.Principal, p.TaskID)
		if err != nil {
			return controllerResult{}, err
		}
		if !ok {
			return refused("NOT_FOUND", "no task with this task_id for the caller"), nil
		}
		done, err := s.completeTask(ctx, t.ID, p.Result)
		if err != nil {
			return controllerResult{}, err
		}
		if !done {
			return controllerResult{Error: "INVALID_TRANSITION", ErrorDetail: "the task is no longer submitted", CurrentState: "completed"}, nil
		}
		return controllerResult{Success: true, PreviousState: t.Status, CurrentState: "completed"}, nil
	}
	return refused("UNKNOWN_SCENARIO", "this seller does not implement this scenario; list_scenarios lists those it does"), nil
}

// errSeedBuyTaken refuses seeding a media buy id another principal holds.
var errSeedBuyTaken = &seedError{"INVALID_PARAMS", "params.media_buy_id is taken: choose another id"}

// seedBuyStatuses are the statuses a seeded media buy may take.
var seedBuyStatuses = []string{"pending_creatives", "pending_start", "active", "paused", "completed", "canceled", "rejected"}

// seededBuy makes the media buy seed_media_buy seeds for principal: the
// fixture's status (default active), currency (USD), total_budget, flight
// and packages, under the request's account (the sandbox account when it
// names none).
func seededBuy(principal, id string, ref *accountRef, raw json.RawMessage) (mediaBuy, *seedError) {
	if !taskIDPattern.MatchString(id) {
		return mediaBuy{}, &seedError{"INVALID_PARAMS", "params.media_buy_id must be 1 to 255 of A-Za-z0-9_.:-"}
	}
	var f struct {
		Name        string   `json:"name"`
		Status      string   `json:"status"`
		Currency    string   `json:"currency"`
		TotalBudget *float64 `json:"total_budget"`
		StartTime   string   `json:"start_time"`
		EndTime     string   `json:"end_time"`
		Packages    []pkg    `json:"packages"`
	}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &f); err != nil {
			return mediaBuy{}, &seedError{"INVALID_PARAMS", "params.fixture is not a media buy: " + err.Error()}
		}
	}
	b := mediaBuy{ID: id, Principal: principal, Name: f.Name, Status: f.Status, Currency: f.Currency,
		StartTime: f.StartTime, EndTime: f.EndTime, Revision: 1, Packages: f.Packages, ConfirmedAt: time.Now().UTC()}
	if b.Status == "" {
		b.Status = "active"
	} else if !slices.Contains(seedBuyStatuses, b.Status) {
		return mediaBuy{}, &seedError{"INVALID_PARAMS", "params.fixture.status must be one of " + strings.Join(seedBuyStatuses, ", ")}
	}
	if b.Currency == "" {
		b.Currency = "USD"
	}
	if b.StartTime == "" {
		b.StartTime = b.ConfirmedAt.Format(time.RFC3339)
	}
	if b.EndTime == "" {
		b.EndTime = b.ConfirmedAt.AddDate(0, 1, 0).Format(time.RFC3339)
	}
	if b.Packages == nil {
		b.Packages = []pkg{}
	}
	for _, p := range b.Packages {
		b.TotalBudget += p.Budget
	}
	if f.TotalBudget != nil {
		b.TotalBudget = *f.TotalBudget
	}
	switch {
	case ref != nil && ref.Brand != nil && ref.Brand.Domain != "" && ref.Operator != "":
		b.Account = naturalAccount(ref)
	case ref != nil && ref.AccountID != "":
		b.Account = account{AccountID: ref.AccountID, Name: ref.AccountID, Status: "active", Sandbox: ref.Sandbox}
	default:
		b.Account = naturalAccount(&accountRef{Brand: &brandRef{Domain: "test.example"}, Operator: "test.example", Sandbox: true})
	}
	return b, nil
}

// creativeStatuses are AdCP's creative statuses (enums/creative-status.json).
var creativeStatuses = []string{"processing", "pending_review", "approved", "rejected", "archived"}

// seededCreative makes the creative seed_creative seeds: the fixture over
// the members a listed creative requires (a name, a standard format,
// status approved, its dates).
func seededCreative(id string, fixture map[string]any) (map[string]any, *seedError) {
	now := time.Now().UTC().Format(time.RFC3339)
	cr := map[string]any{"name": id, "format_id": formatRef("display_300x250"), "status": "approved", "created_date": now, "updated_date": now}
	for k, v := range fixture {
		cr[k] = v
	}
	cr["creative_id"] = id
	if f, ok := cr["format_id"].(map[string]any); ok {
		if _, set := f["agent_url"]; !set {
			f["agent_url"] = formatAgent
		}
	} else {
		return nil, &seedError{"INVALID_PARAMS", "params.fixture.format_id must be an object {agent_url, id}"}
	}
	if st, _ := cr["status"].(string); !slices.Contains(creativeStatuses, st) {
		return nil, &seedError{"INVALID_PARAMS", "params.fixture.status must be one of " + strings.Join(creativeStatuses, ", ")}
	}
	return cr, nil
}

// creative finds one of principal's creatives.
func (s *Seller) creative(ctx context.Context, principal, id string) (map[string]any, bool, error) {
	lib, err := s.store.creatives(ctx, principal)
	if err != nil {
		return nil, false, err
	}
	for _, raw := range lib {
		var cr map[string]any
		if err := json.Unmarshal(raw, &cr); err != nil {
			return nil, false, fmt.Errorf("a stored creative: %w", err)
		}
		if cr["creative_id"] == id {
			return cr, true, nil
		}
	}
	return nil, false, nil
}
