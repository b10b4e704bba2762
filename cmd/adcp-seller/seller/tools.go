package seller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"slices"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/webhook"
)

// tool is one AdCP task of the seller, served the same way on every
// transport: its name (the MCP tool, the A2A skill, the idempotency
// operation), what it does, its input schema and its runner.
type tool struct {
	name, description string
	schema            json.RawMessage
	run               adcp.Runner
}

// newTools builds the seller's tools. The mutating ones run through the
// store at most once per key; the reads replay when given a key.
func (s *Seller) newTools() []tool {
	opts := &adcp.Options{Logger: s.log, AccountSalt: s.cfg.AccountSalt}
	g := s.store.guard()
	read, list := inputSchema[readRequest](), inputSchema[listRequest]()
	tools := []tool{
		{"get_adcp_capabilities", "This seller's AdCP capabilities: versions, adcp.idempotency (replay window), webhook signing, compliance testing.",
			read, adcp.Read(g, opts, s.capabilities)},
		{"get_products", "The products on sale, each with its formats and pricing options. Always synchronous.",
			inputSchema[getProductsRequest](), adcp.Read(g, opts, s.getProducts)},
		{"list_creative_formats", "The creative formats the products take (those seeded for the account named, if any), a page at a time (pagination.max_results, cursor).",
			list, adcp.Read(g, opts, s.listCreativeFormats)},
		{"sync_accounts", "Provision or update accounts, each named by brand and operator (billing operator), before the first media buy. Requires idempotency_key: a retry with the same key gets the first answer back. dry_run previews.",
			inputSchema[syncAccountsRequest]("idempotency_key", "accounts"), s.store.mutating(opts, s.syncAccounts)},
		{"list_accounts", "The caller's accounts (synced, or opened by a media buy under brand and operator), optionally only those of a status or sandbox, a page at a time (pagination.max_results, cursor).",
			inputSchema[listAccountsRequest](), adcp.Read(g, opts, s.listAccounts)},
		{"list_creatives", "The caller's creative library, a page at a time (pagination.max_results, cursor): the creatives comply_test_controller seeded (this seller takes none from buyers).",
			list, adcp.Read(g, opts, s.listCreatives)},
		{"create_media_buy", "Create a media buy. Requires idempotency_key: a retry with the same key gets the first answer back, never a second buy. With push_notification_config (AdCP 3.1+) it answers submitted with a task_id and reports the outcome by webhook.",
			inputSchema[createRequest]("idempotency_key", "account", "brand", "start_time", "end_time", "packages"),
			s.store.mutating(opts, s.createMediaBuy)},
		{"update_media_buy", "Pause, resume or cancel a media buy or its packages, change budgets or the end date. Requires idempotency_key, like create_media_buy.",
			inputSchema[updateRequest]("idempotency_key", "media_buy_id"),
			s.store.mutating(opts, s.updateMediaBuy)},
		{"get_media_buys", "The caller's media buys, all or those named by media_buy_ids, a page at a time (pagination.max_results, cursor).",
			inputSchema[getMediaBuysRequest](), adcp.Read(g, opts, s.getMediaBuys)},
		{"get_media_buy_delivery", "Delivery of the caller's media buys (all, or those named by media_buy_ids; optionally by account and status_filter): totals and per-package impressions, spend, clicks, for their lifetime or start_date to end_date, with include_package_daily_breakdown per day. This seller serves no ads: delivery is what comply_test_controller's simulate_delivery injected.",
			inputSchema[deliveryRequest](), adcp.Read(g, opts, s.getMediaBuyDelivery)},
		{"get_task_status", "The status of a task (a submitted create_media_buy), and its result with include_result.",
			inputSchema[taskStatusRequest]("task_id"), adcp.Read(g, opts, s.getTaskStatus)},
	}
	if len(s.cfg.Sandbox) > 0 {
		tools = append(tools, tool{"comply_test_controller", "AdCP test controller, for sandbox principals only: seed products, pricing options, formats, media buys and creatives; force a creative's, an account's or a media buy's status; force the next create_media_buy to answer submitted; complete a task; simulate a media buy's delivery.",
			inputSchema[controllerRequest]("scenario"), adcp.ReadOnly(opts, s.comply)})
	}
	return tools
}

// newMCPServer serves the tools over MCP.
func (s *Seller) newMCPServer() *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "adcp-go-reference-seller", Version: "0.2.0"}, nil)
	opts := &adcpmcp.Options{Logger: s.log}
	for _, t := range s.tools {
		adcpmcp.AddTool(srv, &mcp.Tool{Name: t.name, Description: t.description, InputSchema: t.schema}, adcpmcp.Handler(opts, t.run))
	}
	return srv
}

// capabilitiesResponse is get_adcp_capabilities' answer.
type capabilitiesResponse struct {
	ADCP struct {
		MajorVersions     []int           `json:"major_versions"`
		SupportedVersions []adcp.Version  `json:"supported_versions"`
		Idempotency       idem.Capability `json:"idempotency"`
	} `json:"adcp"`
	SupportedProtocols []string            `json:"supported_protocols"`
	Account            map[string]any      `json:"account"`
	MediaBuy           map[string]any      `json:"media_buy"`
	WebhookSigning     *webhook.Capability `json:"webhook_signing,omitempty"`
	ComplianceTesting  *struct {
		Scenarios []string `json:"scenarios"`
	} `json:"compliance_testing,omitempty"`
	RequestSigning httpsig.Capability `json:"request_signing"`
}

func (s *Seller) capabilities(_ context.Context, c *adcp.Call) (capabilitiesResponse, error) {
	var r capabilitiesResponse
	r.ADCP.MajorVersions = []int{3}
	r.ADCP.SupportedVersions = adcp.SupportedVersions
	r.ADCP.Idempotency = s.store.capability()
	r.RequestSigning = s.signing.capability()
	r.SupportedProtocols = []string{"media_buy"}
	r.Account = map[string]any{"require_operator_auth": false, "supported_billing": supportedBilling, "sandbox": len(s.cfg.Sandbox) > 0}
	// get_products takes all three buying modes and answers proposals in
	// brief and refine modes, but create_media_buy takes no proposal_id,
	// so supports_proposals (which promises that) stays false.
	r.MediaBuy = map[string]any{"supported_pricing_models": []string{"cpm"}, "buying_modes": []string{"brief", "wholesale", "refine"}, "supports_proposals": false}
	r.RequestSigning = s.signing.capability()
	wc := s.sender.Capability()
	r.WebhookSigning = &wc
	// AdCP 3.0 closed compliance_testing.scenarios to six force_ and
	// simulate_ scenarios: a 3.0 answer lists those of them this seller
	// implements. From 3.1 the list is open.
	if len(s.cfg.Sandbox) > 0 {
		scenarios := controllerScenarios
		if !c.Version.AtLeast(adcp.V3_1) {
			scenarios = slices.DeleteFunc(slices.Clone(scenarios), func(sc string) bool { return !slices.Contains(v30Scenarios, sc) })
		}
		r.ComplianceTesting = &struct {
			Scenarios []string `json:"scenarios"`
		}{scenarios}
	}
	return r, nil
}

// v30Scenarios is AdCP 3.0's closed list of compliance_testing scenarios.
var v30Scenarios = []string{"force_creative_status", "force_account_status", "force_media_buy_status", "force_session_status", "simulate_delivery", "simulate_budget_spend"}

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
