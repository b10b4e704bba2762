package adcpmcp_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

type createMediaBuy struct {
	Packages []struct {
		ProductID string  `json:"product_id"`
		Budget    float64 `json:"budget"`
	} `json:"packages"`
}

type mediaBuy struct {
	MediaBuyID     string `json:"media_buy_id"`
	Status         string `json:"status"`
	IdempotencyKey string `json:"idempotency_key"`
}

// A seller's MCP endpoint with one idempotent mutating tool, on memstore.
func Example() {
	store := memstore.New(nil)
	defer store.Close()
	guard, err := idem.NewGuard(store, nil)
	if err != nil {
		log.Fatal(err)
	}

	server := mcp.NewServer(&mcp.Implementation{Name: "my-seller", Version: "1.0.0"}, nil)
	adcpmcp.AddTool(server, &mcp.Tool{Name: "create_media_buy", Description: "Create a media buy."},
		adcpmcp.Mutating(guard, nil, func(ctx context.Context, call *adcp.Call) (mediaBuy, error) {
			var req createMediaBuy
			if err := call.Decode(&req); err != nil {
				return mediaBuy{}, err
			}
			if len(req.Packages) == 0 {
				return mediaBuy{}, &adcp.Error{Code: "INVALID_REQUEST", Message: "packages must not be empty",
					Recovery: "correctable", Field: "packages"}
			}
			// ... book it; this runs at most once per (principal, key) ...
			return mediaBuy{MediaBuyID: "mb_1", Status: "pending_creatives", IdempotencyKey: call.Key}, nil
		}))

	// The principal is the verified caller: adcpmcp reads TokenInfo.UserID.
	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		if token != "sk_live_example_token" {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: "agency-42", Expiration: time.Now().Add(time.Hour)}, nil
	}
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	http.Handle("/mcp", auth.RequireBearerToken(verify, nil)(adcpmcp.AcceptJSON(mcpHandler)))
	// http.ListenAndServe("127.0.0.1:8080", nil)
}

// With Postgres, the handler writes through the transaction that also
// stores its answer.
func ExampleMutatingTx() {
	pool, err := pgxpool.New(context.Background(), "postgres://localhost/seller")
	if err != nil {
		log.Fatal(err)
	}
	store, err := idem.NewStore(nil)
	if err != nil {
		log.Fatal(err)
	}
	server := mcp.NewServer(&mcp.Implementation{Name: "my-seller", Version: "1.0.0"}, nil)
	adcpmcp.AddTool(server, &mcp.Tool{Name: "create_media_buy"},
		adcpmcp.MutatingTx(store, pool, nil, func(ctx context.Context, tx pgx.Tx, call *adcp.Call) (mediaBuy, error) {
			b := mediaBuy{Status: "pending_creatives", IdempotencyKey: call.Key}
			err := tx.QueryRow(ctx, `INSERT INTO media_buys (principal, request) VALUES ($1, $2)
				RETURNING 'mb_' || id`, call.Principal, call.Arguments).Scan(&b.MediaBuyID)
			return b, err
		}))
}
