package seller_test

import (
	"context"
	"testing"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/idem"
)

// The seller in memory mode, over real MCP.
func TestMemorySeller(t *testing.T) {
	s, err := seller.New(context.Background(), seller.Config{
		Tokens: sellertest.Tokens(), AllowLoopbackWebhooks: true,
		Idempotency: &idem.Config{Limiter: idem.Unlimited},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	sellertest.Run(t, sellertest.EnvFor(t, s))
}
