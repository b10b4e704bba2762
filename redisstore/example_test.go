package redisstore_test

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/redisstore"
)

type CreateMediaBuy struct {
	Key    string `json:"idempotency_key"`
	Budget int    `json:"budget"`
}

func (r CreateMediaBuy) IdempotencyKey() string { return r.Key }

type MediaBuy struct {
	ID     string `json:"media_buy_id"`
	Budget int    `json:"budget"`
}

// A Guard on Redis, shared by every replica of the seller. The business
// write carries the idempotency key in a UNIQUE column, so that if a crash
// between its commit and the stored answer makes a retry run the handler
// again, the second run finds the first one's media buy instead of booking
// another.
func Example() {
	ctx := context.Background()
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 []string{"localhost:6379"}, // several addresses: a Cluster; with MasterName: Sentinel
		ContextTimeoutEnabled: true,                       // context deadlines bound each call
	})
	defer client.Close()

	store, err := redisstore.New(ctx, client, &redisstore.Options{RequireNoEviction: true})
	if err != nil {
		panic(err) // Redis unreachable, or it may evict records
	}
	guard, err := idem.NewGuard(store, nil)
	if err != nil {
		panic(err)
	}

	var db *sql.DB // the seller's database, with UNIQUE (principal, idempotency_key) on media_buys
	create := idem.Wrap(guard, "create_media_buy", func(ctx context.Context, r CreateMediaBuy) (MediaBuy, error) {
		var b MediaBuy
		err := db.QueryRowContext(ctx, `
			INSERT INTO media_buys (principal, idempotency_key, budget) VALUES ($1, $2, $3)
			ON CONFLICT (principal, idempotency_key) DO UPDATE SET budget = media_buys.budget
			RETURNING 'mb_' || id, budget`,
			idem.PrincipalFrom(ctx), r.Key, r.Budget).Scan(&b.ID, &b.Budget)
		return b, err
	})

	ctx = idem.WithPrincipal(ctx, "agent-42") // in the authentication middleware
	res, err := create(ctx, CreateMediaBuy{Key: "7f0c6a2e-5d1b-4c39-9e0a-2f4b8d1c6e55", Budget: 5000})
	if err != nil {
		// idem.Wire(err) is the AdCP error body. If Redis cannot be reached,
		// err matches idem.ErrStorage (SERVICE_UNAVAILABLE, transient).
		fmt.Println(idem.Wire(err).Code)
		return
	}
	fmt.Println(res.Value.ID, "replayed:", res.Replayed)
}
