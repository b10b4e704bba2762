package seller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/idem"
)

// BenchmarkSellerMCPCreateMediaBuy: one create_media_buy tools/call
// through the seller's whole HTTP handler (request id and access log,
// signature pre-check, bearer auth, the MCP SDK's streamable handler,
// adcpmcp, adcp, the Guard on memstore with answers sealed at rest, the
// metrics observer), in memory mode as `adcp-seller -dev -insert-rate 0`
// runs it, with httptest and no network. fresh sends a new key each time
// (the buy is made and its answer stored); replay resends one key (the
// stored answer comes back). Run with
//
//	go test ./cmd/adcp-seller/seller -run '^$' -bench SellerMCP -benchmem
//
// docs/BENCHMARKS.md ("MCP path allocations") has the figures. The
// figures include the benchmark's own request and recorder (about 19
// allocations and 6 KB an operation, the same in both variants).
func BenchmarkSellerMCPCreateMediaBuy(b *testing.B) {
	s := benchSeller(b)
	h := s.Handler()
	prefix, suffix := createBody(b)
	call := func(b *testing.B, key string) {
		body := make([]byte, 0, len(prefix)+len(key)+len(suffix))
		body = append(append(append(body, prefix...), key...), suffix...)
		r := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		r.Header.Set("Authorization", "Bearer "+sellertest.Token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK || bytes.Contains(rec.Body.Bytes(), []byte(`"isError":true`)) {
			b.Fatalf("create_media_buy: HTTP %d: %s", rec.Code, rec.Body)
		}
	}
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			n++
			call(b, "bench-fresh-key-"+strconv.Itoa(n)+"-0000000000")
		}
	})
	b.Run("replay", func(b *testing.B) {
		b.ReportAllocs()
		const key = "bench-replay-key-000000000000"
		call(b, key)
		for b.Loop() {
			call(b, key)
		}
	})
}

// benchSeller is the seller in memory mode as the binary configures it:
// a sealing key ring, metrics, a text access log (to io.Discard), no rate
// limit on new keys.
func benchSeller(b *testing.B) *seller.Seller {
	b.Helper()
	ring, err := idem.NewKeyRing("bench", map[string][]byte{"bench": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		b.Fatal(err)
	}
	tel, err := seller.NewTelemetry()
	if err != nil {
		b.Fatal(err)
	}
	s, err := seller.New(context.Background(), seller.Config{
		Tokens: sellertest.Tokens(), AccountSalt: []byte("a bench account salt"), Telemetry: tel,
		Idempotency: &idem.Config{Sealer: ring, Limiter: idem.Unlimited},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	b.Cleanup(func() {
		s.Close()
		_ = tel.Shutdown(context.Background())
	})
	return s
}

// createBody is a tools/call of create_media_buy, split where its
// idempotency_key goes.
func createBody(b *testing.B) (prefix, suffix []byte) {
	b.Helper()
	const marker = "KEY-MARKER-0123456789"
	body, err := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": "create_media_buy", "arguments": createArgs(marker)},
	})
	if err != nil {
		b.Fatal(err)
	}
	before, after, ok := strings.Cut(string(body), marker)
	if !ok {
		b.Fatal("no key in the body")
	}
	return []byte(before), []byte(after)
}
