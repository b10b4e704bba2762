package riverdelivery_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/webhook"
	"github.com/adcp-go/idempotency/webhook/riverdelivery"
)

// submitted is the initial answer of create_media_buy: the work continues
// after the response, and its outcome goes to the buyer's webhook.
type submitted struct {
	Status string `json:"status"`
	TaskID string `json:"task_id"`
}

// A create_media_buy handler under idem.RunInTx writes the media buy and
// enqueues its webhook in the same transaction as the stored answer: all
// three commit, or none does, and a replay of the request (which does not
// run the handler) enqueues nothing.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	// River's tables; package migrations' Up creates the idempotency table.
	if err := riverdelivery.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	// The worker side: the Sender holds the signing key (published in the
	// seller's JWKS) and the SSRF guard.
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := httpsig.NewSigner(httpsig.ProfileWebhook, "seller-2026-04", key)
	if err != nil {
		log.Fatal(err)
	}
	sender, err := webhook.NewSender(&webhook.SenderConfig{Signer: signer})
	if err != nil {
		log.Fatal(err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, riverdelivery.NewWorker(sender))
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 20}},
		Workers: workers,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx)

	// The request side.
	store, err := idem.NewStore(nil)
	if err != nil {
		log.Fatal(err)
	}
	args := json.RawMessage(`{"idempotency_key":"8c1f0a4e-9b7d-4e21-a3c5-0f6e2d9b1a77","total_budget":{"amount":5000,"currency":"USD"},
		"push_notification_config":{"url":"https://buyer.example/adcp/webhook/route_abc","operation_id":"op_456"}}`)
	cfg, hasWebhook, err := webhook.ReadPushNotificationConfig(args, nil)
	if err != nil {
		log.Fatal(err) // answer INVALID_REQUEST
	}
	req := idem.Request{Principal: "agent-42", Key: "8c1f0a4e-9b7d-4e21-a3c5-0f6e2d9b1a77", Operation: "create_media_buy", Payload: args}
	res, err := idem.RunInTx(ctx, store, pool, req, func(ctx context.Context, tx pgx.Tx) (submitted, error) {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO media_buys (principal, budget) VALUES ($1, $2) RETURNING id`, req.Principal, 5000).Scan(&id); err != nil {
			return submitted{}, err
		}
		task := fmt.Sprintf("task_%d", id)
		if hasWebhook {
			d, err := webhook.NewDelivery(cfg, webhook.Notification{
				TaskID: task, TaskType: "create_media_buy", Status: webhook.StatusCompleted,
				Result: map[string]string{"media_buy_id": fmt.Sprintf("mb_%d", id)},
			})
			if err != nil {
				return submitted{}, err
			}
			if _, err := riverdelivery.Enqueue(ctx, client, tx, d, nil); err != nil {
				return submitted{}, err
			}
		}
		return submitted{Status: "submitted", TaskID: task}, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Value.Status, res.Replayed)
}
