package httpsig_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
)

// A seller signs a webhook; the buyer verifies it against a JWKS built from
// the seller's public key.
func Example() {
	// Seller side: an Ed25519 key (from a KMS in production) and a signer.
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	signer, err := httpsig.NewSigner(httpsig.ProfileWebhook, "seller-2026-04", priv)
	if err != nil {
		panic(err)
	}

	body := []byte(`{"idempotency_key":"whk_01","task_id":"task_456","status":"completed"}`)
	req, _ := http.NewRequest(http.MethodPost, "https://buyer.example.com/adcp/webhook/op_abc", nil)
	req.Header.Set("Content-Type", "application/json")
	if _, err := signer.Sign(req, body); err != nil {
		panic(err)
	}

	// The seller publishes its key; the buyer loads it as a JWKS.
	jwk, _ := signer.PublicJWK()
	keys, _ := httpsig.NewJWKS(jwk)

	// Buyer side: verify with the raw body bytes.
	verifier := httpsig.NewVerifier(httpsig.ProfileWebhook, keys)
	raw, _ := io.ReadAll(req.Body)
	v, err := verifier.Verify(context.Background(), req, raw)
	if err != nil {
		fmt.Println("rejected:", err)
		return
	}
	fmt.Println("verified keyid:", v.KeyID)
	fmt.Println("tag:", v.Params.Tag)
	fmt.Println("covered:", v.Params.Components)
	fmt.Println("validity:", v.Params.Expires.Sub(v.Params.Created))

	// Delivering the same bytes again is a replay.
	_, err = verifier.Verify(context.Background(), req, raw)
	var e *httpsig.Error
	if errors.As(err, &e) {
		fmt.Println("second delivery:", e.Challenge())
	}
	// Output:
	// verified keyid: seller-2026-04
	// tag: adcp/webhook-signing/v1
	// covered: [@method @target-uri @authority content-type content-digest]
	// validity: 5m0s
	// second delivery: Signature error="webhook_signature_replayed"
}

// Publishing an agent's keys at the well-known path.
func ExampleJWKSHandler() {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	jwk, _ := httpsig.NewPublicJWK("agent-2026-04", priv.Public())
	set, _ := httpsig.NewJWKS(jwk)

	h := &httpsig.JWKSHandler{MaxAge: 10 * time.Minute}
	if err := h.Publish(set); err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+httpsig.WellKnownJWKSPath, h)
	fmt.Println(httpsig.WellKnownJWKSPath, jwk.Alg, jwk.AdCPUse)
	// Output: /.well-known/jwks.json EdDSA request-signing
}
