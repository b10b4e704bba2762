package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
)

// Hostile input at the seller's MCP/HTTP layer (issue 7, part 4): raw
// tools/call bodies, as a client that does not use an MCP SDK sends them.
// Each is refused with a clear error and stores nothing. The library-level
// cases and the fuzz targets are in idem/hostile_test.go, idem/fuzz_test.go
// and adcpmcp/fuzz_test.go.
//
// Not parallel: it measures the process's allocations per request, which
// other tests running at the same time would add to.

// toolCall is a bare JSON-RPC tools/call of create_media_buy with args
// spliced in as they are.
func toolCall(args []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(args) + 128)
	b.WriteString(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_media_buy","arguments":`)
	b.Write(args)
	b.WriteString(`}}`)
	return b.Bytes()
}

// rawAnswer classifies the seller's answer to a raw request.
func rawAnswer(status int, body []byte) string {
	if status != http.StatusOK {
		return fmt.Sprintf("HTTP %d", status)
	}
	var msg struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Result struct {
			IsError           bool `json:"isError"`
			StructuredContent struct {
				Error struct {
					Code  string `json:"code"`
					Field string `json:"field"`
				} `json:"adcp_error"`
			} `json:"structuredContent"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		return "unparsable answer"
	}
	switch {
	case msg.Error != nil:
		return fmt.Sprintf("JSON-RPC error %d", msg.Error.Code)
	case msg.Result.IsError:
		s := msg.Result.StructuredContent.Error.Code
		if f := msg.Result.StructuredContent.Error.Field; f != "" {
			s += " (" + f + ")"
		}
		return s
	}
	return "success"
}

func TestReliabilityHostileInputSeller(t *testing.T) {
	pool := newSchema(t)
	url, stop, err := inProcessSeller(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	post := func(body []byte) (int, []byte) { return postMCP(t, url, body) }
	const key = "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50"
	withKey := func(rest string) string {
		return `{"idempotency_key":"` + key + `","account":{"brand":{"domain":"acme.example"},"operator":"acme.example"},"brand":{"domain":"acme.example"},` +
			`"start_time":"asap","end_time":"2099-01-01T00:00:00Z","packages":[{"product_id":"test-product","pricing_option_id":"default","budget":1}]` + rest + `}`
	}
	big := func(n int) string { return withKey(`,"brand":"` + strings.Repeat("x", n) + `"`) }
	const invalidKey = "INVALID_REQUEST (idempotency_key)"
	cases := []struct {
		name, args string
		want       []string // acceptable answers
	}{
		{"key missing", `{"packages":[{"product_id":"p","budget":1}]}`, []string{invalidKey}},
		{"key 15 characters", `{"idempotency_key":"` + strings.Repeat("k", 15) + `"}`, []string{invalidKey}},
		{"key 256 characters", `{"idempotency_key":"` + strings.Repeat("k", 256) + `"}`, []string{invalidKey}},
		{"key 100 000 characters", `{"idempotency_key":"` + strings.Repeat("k", 100000) + `"}`, []string{invalidKey}},
		{"key with unicode", `{"idempotency_key":"clé-idempotente-ü-0001"}`, []string{invalidKey}},
		{"key with an escaped NUL", `{"idempotency_key":"key-with-nul-\u0000-0000000001"}`, []string{invalidKey}},
		{"key with an escaped newline", `{"idempotency_key":"key-with-newline\n00000000001"}`, []string{invalidKey}},
		{"key with raw invalid UTF-8", "{\"idempotency_key\":\"key\xff\xfe-invalid-utf8-000001\"}", []string{invalidKey}},
		{"key a number", `{"idempotency_key":1234567890123456789}`, []string{invalidKey}},
		{"key an object", `{"idempotency_key":{"value":"` + key + `"}}`, []string{invalidKey}},
		{"key null", `{"idempotency_key":null}`, []string{invalidKey}},
		{"arguments an array", `[{"idempotency_key":"` + key + `"}]`, []string{"INVALID_REQUEST"}},
		{"arguments a string", `"create a media buy"`, []string{"INVALID_REQUEST"}},
		{"arguments a number", `42`, []string{"INVALID_REQUEST"}},
		{"arguments true", `true`, []string{"INVALID_REQUEST"}},
		{"200 levels of nesting", withKey(`,"a":` + strings.Repeat("[", 200) + strings.Repeat("]", 200)), []string{"INVALID_REQUEST"}},
		// The MCP SDK's decoder refuses JSON nested deeper than 1000 levels
		// before any tool runs.
		{"10 000 levels of nesting", withKey(`,"a":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000)), []string{"INVALID_REQUEST", "JSON-RPC error -32700", "JSON-RPC error -32600", "JSON-RPC error -32602", "HTTP 400"}},
		{"10 000 levels of objects", withKey(`,"a":` + strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10000)), []string{"INVALID_REQUEST", "JSON-RPC error -32700", "JSON-RPC error -32600", "JSON-RPC error -32602", "HTTP 400"}},
		{"duplicate idempotency_key", `{"idempotency_key":"` + key + `","idempotency_key":"another-key-0000000001","packages":[{"product_id":"p","budget":1}]}`, []string{"INVALID_REQUEST"}},
		{"duplicate packages", withKey(`,"packages":[]`), []string{"INVALID_REQUEST"}},
		{"raw invalid UTF-8 in a value", withKey(",\"brand\":\"\xff\xfe\""), []string{"INVALID_REQUEST", "JSON-RPC error -32700", "HTTP 400"}},
		{"lone surrogate", withKey(`,"brand":"\ud800"`), []string{"INVALID_REQUEST"}},
		{"raw control character", withKey(",\"brand\":\"a\x01b\""), []string{"INVALID_REQUEST", "JSON-RPC error -32700", "HTTP 400"}},
		{"number 1e400", withKey(`,"budget_total":1e400`), []string{"INVALID_REQUEST"}},
		{"number with 400 digits", withKey(`,"budget_total":1` + strings.Repeat("0", 400)), []string{"INVALID_REQUEST"}},
		// Over MaxPayloadBytes (1 MiB) but under the SDK's default
		// MaxRequestBodyBytes (4 MiB): the seller sets that limit to the
		// payload limit plus 64 KiB, so these get HTTP 413 before the SDK
		// decodes them; see TestSellerRequestBodyLimitFollowsPayloadLimit.
		{"2 MiB", big(2 << 20), []string{"INVALID_REQUEST", "HTTP 413"}},
		{"4 MiB - 1 KiB", big(4<<20 - 1<<10), []string{"INVALID_REQUEST", "HTTP 413"}},
		{"8 MiB (over the SDK's MaxRequestBodyBytes)", big(8 << 20), []string{"HTTP 413"}},
		{"64 MiB", big(64 << 20), []string{"HTTP 413"}},
	}
	var summary []string
	for _, tc := range cases {
		body := toolCall([]byte(tc.args))
		status, raw, alloc := measuredPost(t, url, body)
		got := rawAnswer(status, raw)
		if !contains(tc.want, got) {
			t.Errorf("%s: %s (%.200s), want one of %v", tc.name, got, raw, tc.want)
		}
		if strings.Contains(string(raw), strings.Repeat("x", 64)) {
			t.Errorf("%s: the answer echoes the payload: %.200s", tc.name, raw)
		}
		if len(body) > 1<<20 {
			summary = append(summary, fmt.Sprintf("%s -> %s, %.1f MiB allocated", tc.name, got, float64(alloc)/(1<<20)))
		} else {
			summary = append(summary, fmt.Sprintf("%s -> %s", tc.name, got))
		}
		t.Logf("%s: %s, %d bytes allocated: %.160s", tc.name, got, alloc, raw)
	}
	keys := count(t, pool, `SELECT count(*) FROM idempotency_keys`)
	buys := count(t, pool, `SELECT count(*) FROM seller_media_buys`)
	if keys != 0 || buys != 0 {
		t.Errorf("hostile requests stored %d keys and %d media buys, want none", keys, buys)
	}
	// The seller still works.
	status, raw := post(toolCall([]byte(withKey(""))))
	if got := rawAnswer(status, raw); got != "success" {
		t.Errorf("a valid request after the hostile ones: %s: %s", got, raw)
	}
	figure(t, "hostile input (seller over HTTP)", "%d cases, %d keys and %d media buys stored: %s", len(cases), keys, buys, strings.Join(summary, "; "))
}

// postMCP POSTs a raw JSON-RPC body to the seller as the test principal.
func postMCP(t testing.TB, url string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+sellertest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, raw
}

// measuredPost is postMCP and the bytes the process allocated meanwhile
// (the seller is in this process; the request body is built beforehand).
func measuredPost(t testing.TB, url string, body []byte) (int, []byte, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	status, raw := postMCP(t, url, body)
	runtime.ReadMemStats(&after)
	return status, raw, after.TotalAlloc - before.TotalAlloc
}

// Regression test: the seller leaves the MCP SDK's MaxRequestBodyBytes at
// its default, 4 MiB, while its idempotency layer refuses payloads over
// MaxPayloadBytes (1 MiB by default). Everything in between is read and
// decoded by the SDK (several passes over the message: readBatch,
// DecodeMessage, validateRequestMeta, extractRequestMeta, the params)
// before the tool refuses it, at about 35 bytes allocated per byte sent:
// some 70 MiB for a 2 MiB request, 140 MiB for 4 MiB, per request. Capping
// the body at MaxPayloadBytes plus room for the JSON-RPC envelope refuses
// those at the HTTP layer (413) after reading about 1 MiB.
//
// Fix (cmd/adcp-seller/seller/seller.go, New): pass
// MaxRequestBodyBytes: int64(payloadLimit) + 64<<10 in the
// mcp.StreamableHTTPOptions, where payloadLimit is
// cfg.Idempotency.MaxPayloadBytes, or 1 MiB (idem's default) when that is
// zero or cfg.Idempotency is nil.
//
// Not parallel: it measures the process's allocations.
func TestSellerRequestBodyLimitFollowsPayloadLimit(t *testing.T) {
	url, stop, err := inProcessSeller(newSchema(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	const key = "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50"
	const budget = 64 << 20 // bytes a single request may make the seller allocate
	for _, n := range []int{1<<20 - 1<<10, 2 << 20, 4<<20 - 1<<10} {
		body := toolCall([]byte(`{"idempotency_key":"` + key + `","packages":[{"product_id":"p","budget":1}],"brand":"` + strings.Repeat("x", n) + `"}`))
		status, raw, alloc := measuredPost(t, url, body)
		t.Logf("%d-byte request: %s, %.1f MiB allocated", len(body), rawAnswer(status, raw), float64(alloc)/(1<<20))
		if alloc > budget {
			t.Errorf("a %.1f MiB request the idempotency layer refuses anyway (MaxPayloadBytes 1 MiB) made the seller allocate %d MiB; want at most %d MiB: cap StreamableHTTPOptions.MaxRequestBodyBytes near MaxPayloadBytes",
				float64(len(body))/(1<<20), alloc>>20, budget>>20)
		}
	}
}
