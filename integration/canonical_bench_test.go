package integration

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gowebpki/jcs"

	"github.com/adcp-go/idempotency/idem"
)

// The benchmark payloads are AdCP create_media_buy requests, generated
// deterministically (fixed seed) and grown by adding packages until they
// reach a target size. Struct fields are declared in the order a client
// would naturally write them, not sorted, so the canonicaliser has to sort
// every object, as it would for a real request. Strings mix ASCII, Latin-1,
// CJK and emoji, and HTML characters that encoding/json escapes (\u0026);
// numbers mix integers, decimals written with trailing zeros and exponents.

type benchFormatID struct {
	AgentURL string `json:"agent_url"`
	ID       string `json:"id"`
}

type benchFrequencyCap struct {
	SuppressMinutes int `json:"suppress_minutes"`
}

type benchTargeting struct {
	GeoCountryAnyOf   []string           `json:"geo_country_any_of"`
	GeoRegionAnyOf    []string           `json:"geo_region_any_of,omitempty"`
	GeoMetroAnyOf     []string           `json:"geo_metro_any_of,omitempty"`
	AxeIncludeSegment string             `json:"axe_include_segment,omitempty"`
	FrequencyCap      *benchFrequencyCap `json:"frequency_cap,omitempty"`
	Keywords          []string           `json:"keywords,omitempty"`
}

type benchPackage struct {
	BuyerRef         string          `json:"buyer_ref"`
	ProductID        string          `json:"product_id"`
	PricingOptionID  string          `json:"pricing_option_id"`
	FormatIDs        []benchFormatID `json:"format_ids"`
	Budget           json.Number     `json:"budget"`
	BidPrice         json.Number     `json:"bid_price,omitempty"`
	Pacing           string          `json:"pacing"`
	Impressions      int64           `json:"impressions,omitempty"`
	TargetingOverlay benchTargeting  `json:"targeting_overlay"`
	CreativeIDs      []string        `json:"creative_ids,omitempty"`
	Name             string          `json:"name"`
}

type benchRequest struct {
	IdempotencyKey string `json:"idempotency_key"`
	BuyerRef       string `json:"buyer_ref"`
	Brand          struct {
		Domain string `json:"domain"`
		Name   string `json:"name"`
	} `json:"brand"`
	PONumber  string         `json:"po_number"`
	StartTime string         `json:"start_time"`
	EndTime   string         `json:"end_time"`
	Packages  []benchPackage `json:"packages"`
	Budget    struct {
		Total    json.Number `json:"total"`
		Currency string      `json:"currency"`
	} `json:"budget"`
	Context struct {
		CorrelationID string `json:"correlation_id"`
		TraceParent   string `json:"traceparent"`
	} `json:"context"`
	PushNotificationConfig struct {
		URL            string `json:"url"`
		Authentication struct {
			Schemes     []string `json:"schemes"`
			Credentials string   `json:"credentials"`
		} `json:"authentication"`
	} `json:"push_notification_config"`
	Ext map[string]any `json:"ext,omitempty"`
}

var (
	benchNames = []string{
		"Spring launch – Café Müller", "夏のキャンペーン 東京", "Rentrée scolaire à Paris",
		"Black Friday 🚀 deals", "Ñandú & Co. — São Paulo", "Kampagne Frühling: Grüße aus Köln",
		"Back to school <CTV>", "Ramadan Kareem حملة", "Olympics 2028 🏅 LA",
	}
	benchCountries = []string{"US", "CA", "GB", "FR", "DE", "JP", "BR", "MX", "ES", "IT", "NL", "SE"}
	benchRegions   = []string{"US-CA", "US-NY", "US-TX", "CA-ON", "GB-ENG", "FR-IDF", "DE-BY", "JP-13"}
	benchFormats   = []string{"display_300x250", "display_728x90", "video_15s", "video_30s", "native_in_feed", "audio_30s"}
	benchPacing    = []string{"even", "asap", "front_loaded"}
)

// canonicalBenchPayload returns a create_media_buy request of at least size bytes
// (the first that reaches it), always the same for a given size.
func canonicalBenchPayload(size int) []byte {
	r := rand.New(rand.NewPCG(8785, uint64(size)))
	var req benchRequest
	req.IdempotencyKey = "6f1c2a9e-6c1b-4a7e-9d4f-0b9a8f3e2d1c"
	req.BuyerRef = "acme-q3-2026-launch"
	req.Brand.Domain = "acme.example"
	req.Brand.Name = "ACME Corp. & Söhne"
	req.PONumber = "PO-2026-000417"
	req.StartTime = "2026-07-01T00:00:00Z"
	req.EndTime = "2026-09-30T23:59:59Z"
	req.Budget.Currency = "USD"
	req.Context.CorrelationID = "c0rr-7d3f"
	req.Context.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req.PushNotificationConfig.URL = "https://buyer.example/adcp/webhooks/media-buy"
	req.PushNotificationConfig.Authentication.Schemes = []string{"Bearer"}
	req.PushNotificationConfig.Authentication.Credentials = "s3cr3t-token-rotated-often-0123456789abcdef"
	req.Ext = map[string]any{"buyer_platform": "acme-dsp", "version": 3}
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	for total := 0; ; {
		i := len(req.Packages)
		p := benchPackage{
			BuyerRef:        fmt.Sprintf("pkg-%04d", i),
			ProductID:       fmt.Sprintf("prod_%s_%03d", pick(benchFormats), r.IntN(1000)),
			PricingOptionID: fmt.Sprintf("cpm-usd-%s", pick(benchPacing)),
			FormatIDs: []benchFormatID{
				{AgentURL: "https://creative.adcontextprotocol.org", ID: pick(benchFormats)},
				{AgentURL: "https://creative.adcontextprotocol.org", ID: pick(benchFormats)},
			},
			Budget:      json.Number(fmt.Sprintf("%d.%02d", 1000+r.IntN(50000), r.IntN(100))),
			Pacing:      pick(benchPacing),
			Impressions: int64(r.IntN(5_000_000)),
			TargetingOverlay: benchTargeting{
				GeoCountryAnyOf: []string{pick(benchCountries), pick(benchCountries)},
				GeoRegionAnyOf:  []string{pick(benchRegions)},
				GeoMetroAnyOf:   []string{fmt.Sprint(500 + r.IntN(400))},
				FrequencyCap:    &benchFrequencyCap{SuppressMinutes: 30 + r.IntN(600)},
				Keywords:        []string{"sports", "outdoor", "family travel"},
			},
			CreativeIDs: []string{fmt.Sprintf("cr_%08x", r.Uint32()), fmt.Sprintf("cr_%08x", r.Uint32())},
			Name:        pick(benchNames),
		}
		if i%2 == 0 {
			p.BidPrice = json.Number(fmt.Sprintf("%d.50", 5+r.IntN(40)))
			p.TargetingOverlay.AxeIncludeSegment = fmt.Sprintf("seg_%06d", r.IntN(1_000_000))
		} else {
			p.BidPrice = json.Number(fmt.Sprintf("%de1", 1+r.IntN(9))) // an exponent
		}
		req.Packages = append(req.Packages, p)
		total += 1000
		req.Budget.Total = json.Number(fmt.Sprintf("%d.00", total))
		out, err := json.Marshal(req)
		if err != nil {
			panic(err)
		}
		if len(out) >= size {
			return out
		}
	}
}

var benchSizes = []struct {
	name string
	size int
}{{"1KB", 1 << 10}, {"10KB", 10 << 10}, {"100KB", 100 << 10}}

var sinkHash [32]byte

// BenchmarkCanonicalHash compares idem.CanonicalJSONSHA256 with the usual
// alternatives on the same payload:
//
//   - impl=idem: idem.CanonicalJSONSHA256(payload), parse + RFC 8785 + SHA-256;
//   - impl=json-marshal: json.Marshal of the payload already decoded into
//     `any` (the decoding is not timed, nor is any hash): the cost of the
//     usual "unmarshal, re-marshal with sorted keys" approach's second half,
//     which is not RFC 8785 (numbers and key order differ);
//   - impl=jcs: github.com/gowebpki/jcs Transform + SHA-256;
//   - impl=sha256-raw: SHA-256 of the raw bytes alone, a floor that no
//     canonical hash can beat.
//
// All report MB/s of input payload (b.SetBytes(len(payload))).
func BenchmarkCanonicalHash(b *testing.B) {
	for _, sz := range benchSizes {
		payload := canonicalBenchPayload(sz.size)
		if _, err := idem.CanonicalJSONSHA256(payload); err != nil {
			b.Fatalf("%s payload: %v", sz.name, err)
		}
		var decoded any
		if err := json.Unmarshal(payload, &decoded); err != nil {
			b.Fatal(err)
		}
		b.Run("size="+sz.name+"/impl=idem", func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				h, err := idem.CanonicalJSONSHA256(payload)
				if err != nil {
					b.Fatal(err)
				}
				sinkHash = h
			}
		})
		b.Run("size="+sz.name+"/impl=json-marshal", func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				out, err := json.Marshal(decoded)
				if err != nil {
					b.Fatal(err)
				}
				sinkHash[0] = out[0]
			}
		})
		b.Run("size="+sz.name+"/impl=jcs", func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				out, err := jcs.Transform(payload)
				if err != nil {
					b.Fatal(err)
				}
				sinkHash = sha256.Sum256(out)
			}
		})
		b.Run("size="+sz.name+"/impl=sha256-raw", func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				sinkHash = sha256.Sum256(payload)
			}
		})
	}
}

// TestBenchPayloads checks that the generated payloads are what the
// benchmarks claim: deterministic, near their target size, accepted by the
// canonical hash, and hashed the same way by this library and by
// gowebpki/jcs once AdCP's excluded fields are removed (so both sides of
// the comparison do the same work).
func TestBenchPayloads(t *testing.T) {
	for _, sz := range benchSizes {
		p := canonicalBenchPayload(sz.size)
		if string(p) != string(canonicalBenchPayload(sz.size)) {
			t.Fatalf("%s: payload is not deterministic", sz.name)
		}
		if len(p) < sz.size || len(p) > sz.size+sz.size/2+1024 {
			t.Fatalf("%s: payload is %d bytes", sz.name, len(p))
		}
		ours, err := idem.CanonicalJSONSHA256(p)
		if err != nil {
			t.Fatalf("%s: %v", sz.name, err)
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "idempotency_key")
		delete(m, "governance_context")
		if _, ok := m["context"].(map[string]any); ok {
			delete(m, "context")
		}
		if pnc, ok := m["push_notification_config"].(map[string]any); ok {
			if auth, ok := pnc["authentication"].(map[string]any); ok {
				delete(auth, "credentials")
			}
		}
		stripped, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		canon, err := jcs.Transform(stripped)
		if err != nil {
			t.Fatalf("%s: jcs: %v", sz.name, err)
		}
		if theirs := sha256.Sum256(canon); theirs != ours {
			t.Fatalf("%s: idem.CanonicalJSONSHA256 and gowebpki/jcs disagree", sz.name)
		}
	}
}
