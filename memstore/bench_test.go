package memstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

// benchPayload is a 1330-byte AdCP create_media_buy request: the 1 KB
// payload that idem's BenchmarkCanonicalHash generates (size=1KB), copied
// here so that this package does not depend on idem's tests.
const benchPayload = `{"idempotency_key":"6f1c2a9e-6c1b-4a7e-9d4f-0b9a8f3e2d1c","buyer_ref":"acme-q3-2026-launch","brand":{"domain":"acme.example","name":"ACME Corp. \u0026 Söhne"},"po_number":"PO-2026-000417","start_time":"2026-07-01T00:00:00Z","end_time":"2026-09-30T23:59:59Z","packages":[{"buyer_ref":"pkg-0000","product_id":"prod_video_30s_093","pricing_option_id":"cpm-usd-front_loaded","format_ids":[{"agent_url":"https://creative.adcontextprotocol.org","id":"display_728x90"},{"agent_url":"https://creative.adcontextprotocol.org","id":"native_in_feed"}],"budget":42468.48,"bid_price":28.50,"pacing":"asap","impressions":4169351,"targeting_overlay":{"geo_country_any_of":["FR","ES"],"geo_region_any_of":["FR-IDF"],"geo_metro_any_of":["878"],"axe_include_segment":"seg_939643","frequency_cap":{"suppress_minutes":480},"keywords":["sports","outdoor","family travel"]},"creative_ids":["cr_28c2fc47","cr_73a48380"],"name":"Ñandú \u0026 Co. — São Paulo"}],"budget":{"total":1000.00,"currency":"USD"},"context":{"correlation_id":"c0rr-7d3f","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},"push_notification_config":{"url":"https://buyer.example/adcp/webhooks/media-buy","authentication":{"schemes":["Bearer"],"credentials":"s3cr3t-token-rotated-often-0123456789abcdef"}},"ext":{"buyer_platform":"acme-dsp","version":3}}`

// benchResponse is a small create_media_buy answer (about 200 bytes of
// JSON) as a struct; benchResponseRaw is the same answer as json.RawMessage.
type benchResponse struct {
	MediaBuyID       string             `json:"media_buy_id"`
	BuyerRef         string             `json:"buyer_ref"`
	Status           string             `json:"status"`
	CreativeDeadline string             `json:"creative_deadline"`
	Packages         []benchResponsePkg `json:"packages"`
}

type benchResponsePkg struct {
	PackageID string `json:"package_id"`
	BuyerRef  string `json:"buyer_ref"`
}

var (
	benchAnswer = benchResponse{
		MediaBuyID: "mb_01J8Z3K7Q9X2V4N6P8R0T2W4Y6", BuyerRef: "acme-q3-2026-launch", Status: "pending_activation",
		CreativeDeadline: "2026-06-24T00:00:00Z", Packages: []benchResponsePkg{{PackageID: "pkg_01J8Z3K7QA", BuyerRef: "pkg-0000"}},
	}
	benchAnswerRaw, _ = json.Marshal(benchAnswer)
)

func newBenchGuard(b *testing.B) *idem.Guard {
	b.Helper()
	// No background sweeper (it would walk the map during the run), no rate
	// limit (the default allows 60 new keys a second per principal).
	s := memstore.New(&memstore.Options{SweepInterval: -1})
	b.Cleanup(func() { _ = s.Close() })
	g, err := idem.NewGuard(s, &idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// benchTinyPayload is the smallest sensible request, to show the cost of
// Do without the hashing of a realistic payload.
const benchTinyPayload = `{"buyer_ref":"b-1","packages":[]}`

func benchRequest(key string, payload []byte) idem.Request {
	return idem.Request{Principal: "principal-0042", Key: key, Operation: "create_media_buy", Payload: payload}
}

func benchKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(1_000_000_000+i)
	}
	return keys
}

// BenchmarkMemstoreDo measures idem.Do on memstore, one goroutine, for the
// three outcomes, with T = the response struct and T = json.RawMessage:
//
//   - miss: a fresh key each time; the handler returns the answer, which is
//     encoded and stored (keys are generated before the timer starts);
//   - replay: the same key and payload as a completed call; the stored answer
//     is decoded into T;
//   - conflict: the same key with another payload (one number changed).
//
// payload=1330B is the 1 KB create_media_buy request; every call hashes it
// (idem.CanonicalJSONSHA256, about 5 µs; see BenchmarkCanonicalHash).
// payload=34B is a minimal request, which shows the fixed cost of Do.
func BenchmarkMemstoreDo(b *testing.B) {
	for _, p := range []struct{ name, payload, conflicting string }{
		{"1330B", benchPayload, strings.Replace(benchPayload, `"suppress_minutes":480`, `"suppress_minutes":481`, 1)},
		{"34B", benchTinyPayload, strings.Replace(benchTinyPayload, "b-1", "b-2", 1)},
	} {
		if p.conflicting == p.payload {
			b.Fatal("the conflicting payload is the same as the original")
		}
		b.Run("payload="+p.name+"/T=struct", func(b *testing.B) {
			benchDo(b, []byte(p.payload), []byte(p.conflicting), func(context.Context) (benchResponse, error) { return benchAnswer, nil })
		})
		b.Run("payload="+p.name+"/T=RawMessage", func(b *testing.B) {
			benchDo(b, []byte(p.payload), []byte(p.conflicting), func(context.Context) (json.RawMessage, error) { return benchAnswerRaw, nil })
		})
	}
}

func benchDo[T any](b *testing.B, payload, conflicting []byte, handler func(context.Context) (T, error)) {
	ctx := context.Background()
	b.Run("op=miss", func(b *testing.B) {
		g := newBenchGuard(b)
		keys := benchKeys("miss-key-", b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			res, err := idem.Do(ctx, g, benchRequest(keys[i], payload), handler)
			if err != nil || res.Replayed {
				b.Fatalf("miss: %+v, %v", res, err)
			}
		}
	})
	b.Run("op=replay", func(b *testing.B) {
		g := newBenchGuard(b)
		req := benchRequest("replay-key-000000000001", payload)
		if _, err := idem.Do(ctx, g, req, handler); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			res, err := idem.Do(ctx, g, req, handler)
			if err != nil || !res.Replayed {
				b.Fatalf("replay: %+v, %v", res, err)
			}
		}
	})
	b.Run("op=conflict", func(b *testing.B) {
		g := newBenchGuard(b)
		if _, err := idem.Do(ctx, g, benchRequest("conflict-key-0000000001", payload), handler); err != nil {
			b.Fatal(err)
		}
		req := benchRequest("conflict-key-0000000001", conflicting)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := idem.Do(ctx, g, req, handler); !errors.Is(err, idem.ErrConflict) {
				b.Fatalf("conflict: %v", err)
			}
		}
	})
}

// BenchmarkMemstoreParallel measures throughput under b.RunParallel, which
// runs GOMAXPROCS goroutines: run it with -cpu 1,2. ns/op is wall time per
// call over all goroutines, so calls/s = 1e9 / ns/op.
//
//   - keys=10k/op=replay: 10,000 distinct completed keys (stored before the
//     timer starts), each goroutine walking them from its own offset;
//   - op=miss: a fresh key on every call (T = the response struct).
func BenchmarkMemstoreParallel(b *testing.B) {
	ctx := context.Background()
	payload := []byte(benchPayload)
	handler := func(context.Context) (benchResponse, error) { return benchAnswer, nil }
	b.Run("keys=10k/op=replay", func(b *testing.B) {
		g := newBenchGuard(b)
		keys := benchKeys("replay-key-", 10_000)
		for _, k := range keys {
			if _, err := idem.Do(ctx, g, benchRequest(k, payload), handler); err != nil {
				b.Fatal(err)
			}
		}
		var worker atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(worker.Add(1)) * 7919
			for pb.Next() {
				res, err := idem.Do(ctx, g, benchRequest(keys[i%len(keys)], payload), handler)
				if err != nil || !res.Replayed {
					b.Errorf("replay: %+v, %v", res, err)
					return
				}
				i++
			}
		})
	})
	b.Run("op=miss", func(b *testing.B) {
		g := newBenchGuard(b)
		keys := benchKeys("miss-key-", b.N)
		var next atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := keys[next.Add(1)-1]
				if _, err := idem.Do(ctx, g, benchRequest(k, payload), handler); err != nil {
					b.Errorf("miss: %v", err)
					return
				}
			}
		})
	})
}

// BenchmarkMemstoreSealed is BenchmarkMemstoreDo's miss and replay with
// and without encryption at rest (Config.Sealer, an AES-256-GCM key ring),
// the 1330-byte payload and T = json.RawMessage, for answers of 200 B
// (the create_media_buy answer) and 4 KiB (a larger read). The difference
// between sealed=on and sealed=off is the cost of sealing (miss) and
// opening (replay) one answer.
func BenchmarkMemstoreSealed(b *testing.B) {
	ring, err := idem.NewKeyRing("k1", map[string][]byte{"k1": []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	big := json.RawMessage(`{"media_buys":[` + strings.TrimSuffix(strings.Repeat(string(benchAnswerRaw)+",", 20), ",") + `]}`)
	for _, answer := range []struct {
		name string
		body json.RawMessage
	}{{"200B", benchAnswerRaw}, {strconv.Itoa(len(big)) + "B", big}} {
		for _, sealed := range []bool{false, true} {
			cfg := &idem.Config{Limiter: idem.Unlimited}
			name := "answer=" + answer.name + "/sealed=off"
			if sealed {
				cfg.Sealer = ring
				name = "answer=" + answer.name + "/sealed=on"
			}
			handler := func(context.Context) (json.RawMessage, error) { return answer.body, nil }
			b.Run(name+"/op=miss", func(b *testing.B) {
				s := memstore.New(&memstore.Options{SweepInterval: -1})
				b.Cleanup(func() { _ = s.Close() })
				g, _ := idem.NewGuard(s, cfg)
				keys := benchKeys("miss-key-", b.N)
				b.ReportAllocs()
				b.SetBytes(int64(len(answer.body)))
				b.ResetTimer()
				for i := range b.N {
					if _, err := idem.Do(context.Background(), g, benchRequest(keys[i], []byte(benchPayload)), handler); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(name+"/op=replay", func(b *testing.B) {
				s := memstore.New(&memstore.Options{SweepInterval: -1})
				b.Cleanup(func() { _ = s.Close() })
				g, _ := idem.NewGuard(s, cfg)
				req := benchRequest("replay-key-000000000001", []byte(benchPayload))
				if _, err := idem.Do(context.Background(), g, req, handler); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.SetBytes(int64(len(answer.body)))
				for b.Loop() {
					if res, err := idem.Do(context.Background(), g, req, handler); err != nil || !res.Replayed {
						b.Fatal(res, err)
					}
				}
			})
		}
	}
}

// BenchmarkMemstoreKeyedRead measures a read through adcp.Read on memstore:
// op=replay is a read whose key was answered before (the replay contract of
// AdCP 3.2), op=unkeyed is the same read without a key (it just runs);
// both parse the arguments and build the answer as a transport would.
func BenchmarkMemstoreKeyedRead(b *testing.B) {
	g := newBenchGuard(b)
	read := adcp.Read(g, nil, func(context.Context, *adcp.Call) (json.RawMessage, error) { return benchAnswerRaw, nil })
	ctx := context.Background()
	keyed := adcp.Task{Tool: "get_media_buys", Principal: "principal-0042", Arguments: json.RawMessage(`{"idempotency_key":"read-key-00000000000001","media_buy_ids":["mb_1"]}`)}
	if a := read(ctx, keyed); a.IsError {
		b.Fatalf("%s", a.Body)
	}
	b.Run("op=replay", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if a := read(ctx, keyed); a.IsError {
				b.Fatalf("%s", a.Body)
			}
		}
	})
	unkeyed := adcp.Task{Tool: "get_media_buys", Principal: "principal-0042", Arguments: json.RawMessage(`{"media_buy_ids":["mb_1"]}`)}
	b.Run("op=unkeyed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if a := read(ctx, unkeyed); a.IsError {
				b.Fatalf("%s", a.Body)
			}
		}
	})
}

// BenchmarkMemstoreBytesPerEntry measures the heap one stored key costs,
// for answers of 64 B to 64 KiB: it completes up to 100 000 keys of one
// principal through idem.Do (fewer for large answers, so that each size
// holds at most 256 MiB of answers), then reports the live heap they hold
// (after a GC, against the empty store) per key as B/entry, and B/entry
// minus the answer's own bytes as overhead-B/entry, and the number of keys.
// The request payload is not kept (only its SHA-256), so its size does not
// matter here. scripts/benchplot.go draws B/entry against the answer size.
func BenchmarkMemstoreBytesPerEntry(b *testing.B) {
	for _, size := range []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10} {
		n := min(100_000, (256<<20)/size)
		answer := json.RawMessage(`{"media_buy_id":"mb_0123456789","pad":"` + strings.Repeat("x", size-41) + `"}`)
		if len(answer) != size {
			b.Fatalf("answer of %d bytes, want %d", len(answer), size)
		}
		b.Run("answer="+strconv.Itoa(size)+"B", func(b *testing.B) {
			var perEntry float64
			for b.Loop() {
				perEntry = bytesPerEntry(b, n, answer)
			}
			b.ReportMetric(perEntry, "B/entry")
			b.ReportMetric(perEntry-float64(size), "overhead-B/entry")
			b.ReportMetric(float64(n), "keys")
		})
	}
}

func bytesPerEntry(b *testing.B, n int, answer json.RawMessage) float64 {
	s := memstore.New(&memstore.Options{SweepInterval: -1})
	defer s.Close()
	g, err := idem.NewGuard(s, &idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys("entry-size-key-", n)
	payload := []byte(benchTinyPayload)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, k := range keys {
		if _, err := idem.Do(context.Background(), g, benchRequest(k, payload), func(context.Context) (json.RawMessage, error) { return answer, nil }); err != nil {
			b.Fatal(err)
		}
	}
	keys = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(s)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}
