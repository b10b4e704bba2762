package adcpa2a_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/a2asrv"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpa2a"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

type createMediaBuyRequest struct {
	Packages []struct {
		ProductID string  `json:"product_id"`
		Budget    float64 `json:"budget"`
	} `json:"packages"`
}

type createMediaBuyResponse struct {
	MediaBuyID string `json:"media_buy_id"`
	Status     string `json:"status"`
}

// A seller's A2A endpoint: an idempotent create_media_buy and
// get_adcp_capabilities, on memstore, behind bearer-token authentication.
func Example() {
	store := memstore.New(nil)
	defer store.Close()
	guard, err := idem.NewGuard(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	createMediaBuy := adcp.Mutating(guard, nil, func(ctx context.Context, call *adcp.Call) (createMediaBuyResponse, error) {
		var req createMediaBuyRequest
		if err := call.Decode(&req); err != nil {
			return createMediaBuyResponse{}, err
		}
		// ... book it; this runs at most once per (principal, key) ...
		return createMediaBuyResponse{MediaBuyID: "mb_1", Status: "pending_creatives"}, nil
	})
	capabilities := adcp.ReadOnly(nil, func(ctx context.Context, call *adcp.Call) (map[string]any, error) {
		return map[string]any{"adcp": map[string]any{"major_versions": []int{3}}, "supported_protocols": []string{"media_buy"}}, nil
	})

	a2aHandler, err := adcpa2a.NewHandler(adcpa2a.Agent{
		Name:        "My seller",
		Description: "Guaranteed CTV and display inventory.",
		URL:         "https://seller.example/a2a", // where clients reach the JSON-RPC endpoint
	}, []adcpa2a.Skill{
		{ID: "create_media_buy", Description: "Create a media buy.", Run: createMediaBuy},
		{ID: "get_adcp_capabilities", Description: "What this seller supports.", Run: capabilities},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}

	// The principal is the verified caller: the middleware puts it into
	// a2asrv's CallContext, where the handler reads it by default.
	principals := map[string]string{"sk_live_example_token": "agency-42"}
	requireToken := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			principal, ok := principals[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
			if !ok {
				w.Header().Set("WWW-Authenticate", "Bearer")
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			ctx, call := a2asrv.WithCallContext(r.Context(), nil)
			call.User = &a2asrv.AuthenticatedUser{UserName: principal}
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
	mux := http.NewServeMux()
	mux.Handle("POST /a2a", requireToken(a2aHandler))
	// The card is public: beside the endpoint, and at the root.
	mux.Handle("GET /a2a"+adcpa2a.AgentCardPath, a2aHandler)
	mux.Handle("GET "+adcpa2a.AgentCardPath, a2aHandler)
	// http.ListenAndServe("127.0.0.1:8080", mux)

	// A buyer's message/send, as the AdCP runner sends it:
	req := httptest.NewRequest(http.MethodPost, "/a2a", strings.NewReader(`{"jsonrpc": "2.0", "id": 1,
		"method": "message/send", "params": {"message": {"kind": "message", "messageId": "m1", "role": "user",
		"parts": [{"kind": "data", "data": {"skill": "create_media_buy", "parameters": {
			"idempotency_key": "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50",
			"packages": [{"product_id": "ctv_prime", "budget": 5000}]}}}]}}}`))
	req.Header.Set("Authorization", "Bearer sk_live_example_token")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	var resp struct {
		Result struct {
			Status    struct{ State string }
			Artifacts []struct {
				Parts []struct{ Data map[string]any }
			}
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		log.Fatal(err)
	}
	answer := resp.Result.Artifacts[0].Parts[0].Data
	fmt.Println(resp.Result.Status.State, answer["media_buy_id"], answer["replayed"])
	// Output: completed mb_1 false
}

// One runner, two transports: a key used over MCP replays over A2A and the
// other way round, because both hand the same task (tool name, principal,
// arguments) to the same idempotency store.
func Example_mcpAndA2A() {
	store := memstore.New(nil)
	defer store.Close()
	guard, err := idem.NewGuard(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	createMediaBuy := adcp.Mutating(guard, nil, func(ctx context.Context, call *adcp.Call) (createMediaBuyResponse, error) {
		return createMediaBuyResponse{MediaBuyID: "mb_1", Status: "pending_creatives"}, nil
	})

	// MCP: the tool's name is the task name.
	server := mcp.NewServer(&mcp.Implementation{Name: "my-seller", Version: "1.0.0"}, nil)
	adcpmcp.AddTool(server, &mcp.Tool{Name: "create_media_buy"}, adcpmcp.Handler(nil, createMediaBuy))

	// A2A: so is the skill's id.
	a2aHandler, err := adcpa2a.NewHandler(
		adcpa2a.Agent{Name: "My seller", Description: "CTV inventory.", URL: "https://seller.example/a2a"},
		[]adcpa2a.Skill{{ID: "create_media_buy", Run: createMediaBuy}},
		// Both transports must name the same principal for the same caller:
		// here both read the token that auth.RequireBearerToken verified.
		&adcpa2a.Options{Principal: func(r *http.Request) string {
			if info := auth.TokenInfoFromContext(r.Context()); info != nil {
				return info.UserID
			}
			return ""
		}})
	if err != nil {
		log.Fatal(err)
	}

	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		if token != "sk_live_example_token" {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: "agency-42", Expiration: time.Now().Add(time.Hour)}, nil
	}
	requireToken := auth.RequireBearerToken(verify, nil)
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	mux := http.NewServeMux()
	mux.Handle("/mcp", requireToken(adcpmcp.AcceptJSON(mcpHandler)))
	mux.Handle("POST /a2a", requireToken(a2aHandler))
	mux.Handle("GET /a2a"+adcpa2a.AgentCardPath, a2aHandler)
	mux.Handle("GET "+adcpa2a.AgentCardPath, a2aHandler)
	// http.ListenAndServe("127.0.0.1:8080", mux)
}
