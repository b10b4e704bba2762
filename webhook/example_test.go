package webhook_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
	"github.com/adcp-go/idempotency/webhook"
)

// A buyer's webhook endpoint: the Receiver verifies each delivery against
// the seller's published keys and runs the handler once per
// (seller, idempotency_key); the seller's retry gets the stored answer.
func ExampleNewReceiver() {
	// The seller's signing key; the buyer knows its public half from the
	// seller's JWKS (fetched from its brand.json agents[] jwks_uri).
	signer, _ := httpsig.NewSigner(httpsig.ProfileWebhook, "seller-2026-04",
		ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
	jwk, _ := signer.PublicJWK()
	sellerKeys, _ := httpsig.NewJWKS(jwk)

	// The buyer: a shared, durable backend in production (Postgres, Redis).
	store := memstore.New(nil)
	defer store.Close()
	guard, _ := idem.NewGuard(store, &idem.Config{Duplicates: idem.RejectInFlight})
	processed := 0
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in, _ := webhook.IncomingFromContext(r.Context())
		processed++ // the side effect that must happen once
		fmt.Println("handler:", in.Event.TaskID, in.Event.Status, "from", in.Sender)
		w.WriteHeader(http.StatusNoContent)
	})
	receiver, err := webhook.NewReceiver(handler, &webhook.ReceiverConfig{
		Verifier: httpsig.NewVerifier(httpsig.ProfileWebhook, sellerKeys),
		Guard:    guard,
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(receiver)
	defer srv.Close()

	// The seller delivers the event, and (its first answer lost, say)
	// delivers it again.
	sender, _ := webhook.NewSender(&webhook.SenderConfig{Signer: signer, URLs: &webhook.URLPolicy{AllowLoopback: true}})
	d, _ := webhook.NewDelivery(webhook.PushNotificationConfig{URL: srv.URL + "/adcp/webhooks", OperationID: "op_456"},
		webhook.Notification{TaskID: "task_456", TaskType: "create_media_buy", Status: webhook.StatusCompleted,
			Result: map[string]string{"media_buy_id": "mb_1"}})
	fmt.Println("first:", sender.Send(context.Background(), d))
	fmt.Println("retry:", sender.Send(context.Background(), d))
	fmt.Println("processed:", processed)
	// Output:
	// handler: task_456 completed from seller-2026-04
	// first: <nil>
	// retry: <nil>
	// processed: 1
}

// A seller reads the registration when the task arrives, and builds the
// event when the task settles.
func ExampleNewDelivery() {
	args := []byte(`{"idempotency_key":"8c1f0a4e-9b7d-4e21-a3c5-0f6e2d9b1a77","total_budget":{"amount":5000,"currency":"USD"},
		"push_notification_config":{"url":"https://buyer.example/adcp/webhook/route_abc","operation_id":"op_456"}}`)
	cfg, ok, err := webhook.ReadPushNotificationConfig(args, nil) // nil: the strict SSRF policy
	if err != nil {
		fmt.Println("INVALID_REQUEST:", err) // e.g. a private address, or no operation_id
		return
	}
	fmt.Println("registered:", ok)

	d, err := webhook.NewDelivery(cfg, webhook.Notification{
		TaskID: "task_456", TaskType: "create_media_buy", Status: webhook.StatusCompleted,
		Result: map[string]string{"media_buy_id": "mb_1"},
	})
	if err != nil {
		panic(err)
	}
	var ev webhook.Event
	_ = json.Unmarshal(d.Body, &ev)
	fmt.Println("key:", strings.HasPrefix(d.IdempotencyKey, "whk_"), ev.IdempotencyKey == d.IdempotencyKey)
	fmt.Println("echoed:", ev.OperationID, ev.TaskID, ev.Status, string(ev.Result))

	_, _, err = webhook.ReadPushNotificationConfig([]byte(`{"push_notification_config":{"url":"https://169.254.169.254/latest","operation_id":"op"}}`), nil)
	fmt.Println(err)
	// Output:
	// registered: true
	// key: true true
	// echoed: op_456 task_456 completed {"media_buy_id":"mb_1"}
	// push_notification_config.url: must not point at a loopback, private or reserved address
}
