package memstore_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

type CreateMediaBuy struct {
	Key     string         `json:"idempotency_key"`
	Budget  int            `json:"budget"`
	Context map[string]any `json:"context,omitempty"`
}

func (r CreateMediaBuy) IdempotencyKey() string { return r.Key }

type MediaBuy struct {
	ID     string `json:"media_buy_id"`
	Budget int    `json:"budget"`
}

// Wrap decorates a typed handler: the key comes from the request, the
// principal from the context.
func Example() {
	store := memstore.New(nil)
	defer store.Close()
	guard, err := idem.NewGuard(store, nil)
	if err != nil {
		panic(err)
	}

	created := 0
	create := idem.Wrap(guard, "create_media_buy", func(ctx context.Context, r CreateMediaBuy) (MediaBuy, error) {
		created++ // the side effect that must happen once
		return MediaBuy{ID: fmt.Sprintf("mb_%d", created), Budget: r.Budget}, nil
	})

	ctx := idem.WithPrincipal(context.Background(), "agent-42") // from authentication
	first, _ := create(ctx, CreateMediaBuy{Key: "7f0c6a2e-5d1b-4c39-9e0a-2f4b8d1c6e55", Budget: 5000})
	fmt.Println(first.Value.ID, "replayed:", first.Replayed)

	// The buyer timed out and retries; a new correlation id in context does
	// not make it a different request.
	retry, _ := create(ctx, CreateMediaBuy{Key: "7f0c6a2e-5d1b-4c39-9e0a-2f4b8d1c6e55", Budget: 5000,
		Context: map[string]any{"correlation_id": "retry-1"}})
	fmt.Println(retry.Value.ID, "replayed:", retry.Replayed)

	// Reusing the key for a different request is a conflict.
	_, err = create(ctx, CreateMediaBuy{Key: "7f0c6a2e-5d1b-4c39-9e0a-2f4b8d1c6e55", Budget: 25000})
	fmt.Println(errors.Is(err, idem.ErrConflict), idem.Wire(err).Code)
	fmt.Println("media buys created:", created)
	// Output:
	// mb_1 replayed: false
	// mb_1 replayed: true
	// true IDEMPOTENCY_CONFLICT
	// media buys created: 1
}
