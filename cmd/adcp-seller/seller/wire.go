package seller

import (
	"encoding/json"
	"reflect"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
)

// The request types of the tools. They are what the tools decode, and their
// JSON schemas (derived from them, see inputSchema) are what tools/list and
// the A2A agent card publish, so the two cannot drift apart. Field names
// follow AdCP; members a tool does not read are accepted and ignored.

// accountRef names the account a request is for: a seller-assigned
// account_id, or the natural key brand + operator.
type accountRef struct {
	AccountID string    `json:"account_id,omitempty" jsonschema:"a seller-assigned account id, from list_accounts"`
	Brand     *brandRef `json:"brand,omitempty" jsonschema:"the advertiser's brand (natural key, with operator)"`
	Operator  string    `json:"operator,omitempty" jsonschema:"the domain of whoever operates the account: the brand itself or its agency"`
	Sandbox   bool      `json:"sandbox,omitempty" jsonschema:"a sandbox account: nothing is bought for real"`
}

type brandRef struct {
	Domain  string `json:"domain" jsonschema:"the brand's domain"`
	BrandID string `json:"brand_id,omitempty" jsonschema:"the brand within a house of brands"`
}

type packageRequest struct {
	ProductID       string          `json:"product_id" jsonschema:"a product_id from get_products"`
	PricingOptionID string          `json:"pricing_option_id" jsonschema:"one of the product's pricing_options"`
	Budget          *float64        `json:"budget" jsonschema:"the package's budget in the pricing option's currency; more than 0"`
	BidPrice        *float64        `json:"bid_price,omitempty" jsonschema:"bid for auction pricing options"`
	Paused          bool            `json:"paused,omitempty" jsonschema:"create the package paused"`
	MeasurementTerm json.RawMessage `json:"measurement_terms,omitempty" jsonschema:"buyer-proposed measurement terms: billing_measurement.max_variance_percent of at least 10 and a measurement_window of live, c3 or c7 are accepted, anything stricter is TERMS_REJECTED"`
	Targeting       json.RawMessage `json:"targeting_overlay,omitempty" jsonschema:"targeting on top of the product's (an object, such as property_list and collection_list references); kept and returned as given"`
}

type pushConfig struct {
	URL         string `json:"url" jsonschema:"where the task's webhooks go (https; http and loopback only with -dev)"`
	OperationID string `json:"operation_id,omitempty" jsonschema:"the buyer's correlation id, echoed in every webhook (required from AdCP 3.1)"`
	Token       string `json:"token,omitempty" jsonschema:"an opaque token echoed in every webhook"`
}

// envelope holds the members every request may carry; the tools' request
// types embed it so that their schemas list them.
type envelope struct {
	AdcpVersion      string          `json:"adcp_version,omitempty" jsonschema:"the AdCP release the buyer speaks, such as 3.2"`
	AdcpMajorVersion int             `json:"adcp_major_version,omitempty" jsonschema:"deprecated: the AdCP major version (3 means 3.0 without adcp_version)"`
	Context          json.RawMessage `json:"context,omitempty" jsonschema:"an opaque object echoed unchanged in the answer"`
	Ext              json.RawMessage `json:"ext,omitempty" jsonschema:"extensions; ignored"`
}

type createRequest struct {
	envelope
	IdempotencyKey         string           `json:"idempotency_key" jsonschema:"16 to 255 of A-Za-z0-9_.:-, fresh for every new media buy; a retry resends it"`
	Account                *accountRef      `json:"account" jsonschema:"the account billed"`
	Brand                  *brandRef        `json:"brand" jsonschema:"the advertiser's brand"`
	Name                   string           `json:"name,omitempty" jsonschema:"a name for the media buy"`
	PONumber               string           `json:"po_number,omitempty" jsonschema:"the buyer's purchase order number"`
	StartTime              string           `json:"start_time" jsonschema:"asap, or an RFC 3339 date-time"`
	EndTime                string           `json:"end_time" jsonschema:"an RFC 3339 date-time after start_time"`
	Packages               []packageRequest `json:"packages" jsonschema:"one or more packages"`
	ProposalID             string           `json:"proposal_id,omitempty" jsonschema:"not supported: send packages following a proposal's allocations instead (UNSUPPORTED_FEATURE)"`
	PushNotificationConfig *pushConfig      `json:"push_notification_config,omitempty" jsonschema:"webhook registration for the task's status changes"`
}

type packageUpdate struct {
	PackageID string          `json:"package_id" jsonschema:"a package of the media buy"`
	Budget    *float64        `json:"budget,omitempty" jsonschema:"the package's new budget; more than 0"`
	Paused    *bool           `json:"paused,omitempty" jsonschema:"pause or resume the package"`
	Targeting json.RawMessage `json:"targeting_overlay,omitempty" jsonschema:"the package's new targeting overlay (an object), replacing the old one"`
}

type updateRequest struct {
	envelope
	IdempotencyKey string          `json:"idempotency_key" jsonschema:"16 to 255 of A-Za-z0-9_.:-, fresh for every new change; a retry resends it"`
	Account        *accountRef     `json:"account" jsonschema:"the media buy's account"`
	MediaBuyID     string          `json:"media_buy_id" jsonschema:"the media buy to change"`
	Revision       int             `json:"revision,omitempty" jsonschema:"the revision the change is based on; a stale one is CONFLICT"`
	Paused         *bool           `json:"paused,omitempty" jsonschema:"pause or resume the whole media buy"`
	Canceled       bool            `json:"canceled,omitempty" jsonschema:"cancel the media buy (final)"`
	EndTime        string          `json:"end_time,omitempty" jsonschema:"a new RFC 3339 end"`
	Packages       []packageUpdate `json:"packages,omitempty" jsonschema:"changes to packages"`
}

type readRequest struct {
	envelope
	IdempotencyKey string      `json:"idempotency_key,omitempty" jsonschema:"optional: a retry with the same key replays the first answer"`
	Account        *accountRef `json:"account,omitempty" jsonschema:"the account to read for"`
}

// listRequest is a read that lists: it may ask for a page.
type listRequest struct {
	readRequest
	Pagination *paginationRequest `json:"pagination,omitempty" jsonschema:"cursor pagination: max_results and the previous page's cursor"`
}

type listAccountsRequest struct {
	listRequest
	Status  string `json:"status,omitempty" jsonschema:"only accounts in this status: active, pending_approval, rejected, payment_required, suspended or closed"`
	Sandbox *bool  `json:"sandbox,omitempty" jsonschema:"true: only sandbox accounts; false: only production accounts; absent: both"`
}

// syncAccount is one account of a sync_accounts request.
type syncAccount struct {
	Brand        *brandRef `json:"brand" jsonschema:"the advertiser's brand"`
	Operator     string    `json:"operator" jsonschema:"the domain of whoever operates the account: the brand itself or its agency"`
	Billing      string    `json:"billing" jsonschema:"who is invoiced: operator (the only model this seller offers), agent or advertiser"`
	PaymentTerms string    `json:"payment_terms,omitempty" jsonschema:"net_15, net_30 (the default), net_45, net_60, net_90 or prepay"`
	Sandbox      bool      `json:"sandbox,omitempty" jsonschema:"a sandbox account: nothing is bought for real"`
}

type syncAccountsRequest struct {
	envelope
	IdempotencyKey         string          `json:"idempotency_key" jsonschema:"16 to 255 of A-Za-z0-9_.:-, fresh for every new sync; a retry resends it"`
	Accounts               []syncAccount   `json:"accounts" jsonschema:"1 to 1000 accounts to provision or update, each named by brand and operator"`
	DeleteMissing          bool            `json:"delete_missing,omitempty" jsonschema:"not supported: true is UNSUPPORTED_FEATURE"`
	DryRun                 bool            `json:"dry_run,omitempty" jsonschema:"answer what would change and change nothing"`
	PushNotificationConfig json.RawMessage `json:"push_notification_config,omitempty" jsonschema:"accepted and unused: accounts are active at once, so no status change follows"`
}

type getMediaBuysRequest struct {
	listRequest
	MediaBuyIDs []string `json:"media_buy_ids,omitempty" jsonschema:"the media buys to return; all of the caller's when empty"`
}

type deliveryRequest struct {
	readRequest
	MediaBuyIDs                  []string        `json:"media_buy_ids,omitempty" jsonschema:"the media buys to report (at most 100); all of the caller's when empty"`
	StatusFilter                 json.RawMessage `json:"status_filter,omitempty" jsonschema:"only media buys of this status, or of these statuses (an array)"`
	StartDate                    string          `json:"start_date,omitempty" jsonschema:"the first day reported, YYYY-MM-DD (UTC); lifetime when both dates are omitted"`
	EndDate                      string          `json:"end_date,omitempty" jsonschema:"the last day reported, YYYY-MM-DD (UTC)"`
	IncludePackageDailyBreakdown bool            `json:"include_package_daily_breakdown,omitempty" jsonschema:"include each package's daily_breakdown"`
	TimeGranularity              json.RawMessage `json:"time_granularity,omitempty" jsonschema:"not supported: the products declare no windowed_pull_granularities (UNSUPPORTED_GRANULARITY)"`
	AttributionWindow            json.RawMessage `json:"attribution_window,omitempty" jsonschema:"accepted and ignored: this seller reports no conversions attribution"`
	ReportingDimensions          json.RawMessage `json:"reporting_dimensions,omitempty" jsonschema:"accepted; no dimensional breakdown is reported"`
}

type getProductsRequest struct {
	readRequest
	BuyingMode string `json:"buying_mode,omitempty" jsonschema:"wholesale, brief or refine"`
	Brief      string `json:"brief,omitempty" jsonschema:"what the buyer wants, in words"`
	Filters    *struct {
		DeliveryType string   `json:"delivery_type,omitempty" jsonschema:"guaranteed or non_guaranteed"`
		Channels     []string `json:"channels,omitempty" jsonschema:"channels such as display or olv"`
	} `json:"filters,omitempty" jsonschema:"narrow the catalog"`
	Refine                 []refineEntry   `json:"refine,omitempty" jsonschema:"refine mode only: change requests on the products and proposals of a previous answer, each with its scope (request, product or proposal), answered by position in refinement_applied"`
	PushNotificationConfig json.RawMessage `json:"push_notification_config,omitempty" jsonschema:"not supported: get_products always answers synchronously (INVALID_REQUEST)"`
}

// refineEntry is one change request of get_products' refine mode.
type refineEntry struct {
	Scope      string `json:"scope" jsonschema:"request, product or proposal"`
	Ask        string `json:"ask,omitempty" jsonschema:"what the buyer asks for, in words"`
	ProductID  string `json:"product_id,omitempty" jsonschema:"scope product: a product_id from a previous answer"`
	ProposalID string `json:"proposal_id,omitempty" jsonschema:"scope proposal: a proposal_id from a previous answer"`
	Action     string `json:"action,omitempty" jsonschema:"scope product: include (default), omit or more_like_this; scope proposal: include (default), omit or finalize"`
}

type taskStatusRequest struct {
	readRequest
	TaskID        string `json:"task_id" jsonschema:"a task_id from a submitted answer"`
	IncludeResult bool   `json:"include_result,omitempty" jsonschema:"include the terminal result"`
}

type controllerRequest struct {
	envelope
	Scenario string          `json:"scenario" jsonschema:"list_scenarios, or one of the scenarios it lists"`
	Params   json.RawMessage `json:"params,omitempty" jsonschema:"the scenario's parameters"`
	Account  *accountRef     `json:"account,omitempty" jsonschema:"the sandbox account"`
}

// inputSchema is the JSON schema of T as a tool's input: open objects
// (AdCP requests may carry members a tool does not read), any JSON for
// json.RawMessage members, and required exactly the members named.
func inputSchema[T any](required ...string) json.RawMessage {
	s, err := jsonschema.For[T](&jsonschema.ForOptions{TypeSchemas: map[reflect.Type]*jsonschema.Schema{
		reflect.TypeFor[json.RawMessage](): {},
	}})
	if err != nil {
		panic("seller: input schema: " + err.Error()) // the types above are static
	}
	open(s)
	s.Required = required
	b, err := json.Marshal(s)
	if err != nil {
		panic("seller: input schema: " + err.Error())
	}
	return b
}

// open lets every object of s carry more members than it lists, and makes
// no member required (inputSchema names the required ones at the top).
func open(s *jsonschema.Schema) {
	if s == nil {
		return
	}
	s.AdditionalProperties = nil
	s.Required = nil
	if s.Description != "" && !strings.HasSuffix(s.Description, ".") {
		s.Description += "."
	}
	for _, p := range s.Properties {
		open(p)
	}
	open(s.Items)
	if len(s.Types) > 0 {
		// Pointers become ["null", T]: AdCP treats an absent member and
		// null alike, so keep T alone.
		types := s.Types[:0]
		for _, t := range s.Types {
			if t != "null" {
				types = append(types, t)
			}
		}
		if len(types) == 1 {
			s.Type, s.Types = types[0], nil
		} else {
			s.Types = types
		}
	}
}
