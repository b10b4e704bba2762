package seller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/idem"
)

func newSeller(t *testing.T, cfg *idem.Config) *seller.Seller {
	t.Helper()
	s, err := seller.New(context.Background(), seller.Config{
		Tokens: sellertest.Tokens(), AllowLoopbackWebhooks: true, Idempotency: cfg,
		Sandbox: map[string]bool{sellertest.Principal: true}, AccountSalt: []byte("a test account salt"),
		TaskDelay: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// The seller in memory mode, over real MCP and over real A2A: the 3.0.6
// storyboard's scenarios and the AdCP 3.2 ones.
func TestMemorySeller(t *testing.T) {
	env := sellertest.EnvFor(t, newSeller(t, &idem.Config{Limiter: idem.Unlimited}))
	sellertest.Run(t, env)
	sellertest.Run32(t, env)
	t.Run("A2A", func(t *testing.T) {
		sellertest.Run(t, env.OverA2A())
		sellertest.Run32(t, env.OverA2A())
	})
}

// One store behind MCP and A2A, in memory: a key replays across
// transports, a concurrent mix on one key makes one media buy, and another
// principal never sees it.
func TestMemorySellerCrossTransport(t *testing.T) {
	sellertest.CrossTransport(t, sellertest.EnvFor(t, newSeller(t, &idem.Config{Limiter: idem.Unlimited})))
}

// The 3.2 idempotency storyboard's rate_limit_replay_invariant phase.
func TestMemorySellerRateLimitNotReplayed(t *testing.T) {
	s := newSeller(t, &idem.Config{Limiter: idem.NewLimiter(idem.Limits{
		Writes: idem.Rate{PerSecond: 1, Burst: 1}, Reads: idem.Rate{PerSecond: 100, Burst: 100},
	})})
	url := sellertest.Start(t, s)
	sellertest.RateLimitNotReplayed(t, url)
	t.Run("A2A", func(t *testing.T) { sellertest.RateLimitNotReplayed(t, strings.TrimSuffix(url, "/mcp")+"/a2a") })
}
