package idem_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/adcp-go/idempotency/idemtest"
	"github.com/adcp-go/idempotency/memstore"
)

const validKey = "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50"

func nested(open, close string, n int) string {
	return `{"packages":` + strings.Repeat(open, n) + `1` + strings.Repeat(close, n) + `}`
}

// hostileRequests are requests that must each be answered INVALID_REQUEST
// before anything is stored (issue 7, part 4).
func hostileRequests() map[string]idem.Request {
	req := func(key, payload string) idem.Request {
		return idem.Request{Principal: "alice", Key: key, Operation: "create_media_buy", Payload: json.RawMessage(payload)}
	}
	const ok = `{"packages":[{"product_id":"p1","budget":5000}]}`
	return map[string]idem.Request{
		"key missing":               req("", ok),
		"key 15 characters":         req(strings.Repeat("k", 15), ok),
		"key 256 characters":        req(strings.Repeat("k", 256), ok),
		"key 1 MiB":                 req(strings.Repeat("k", 1<<20), ok),
		"key with unicode":          req("clé-idempotente-ü-0001", ok),
		"key with NUL":              req("key-with-nul-\x00-0000000001", ok),
		"key with newline":          req("key-with-newline\n000000000001", ok),
		"key with invalid UTF-8":    req("key\xff\xfe-invalid-utf8-000001", ok),
		"payload an array":          req(validKey, `[{"packages":[]}]`),
		"payload a string":          req(validKey, `"create me a media buy"`),
		"payload a number":          req(validKey, `42`),
		"payload null":              req(validKey, `null`),
		"payload empty":             req(validKey, ``),
		"payload whitespace":        req(validKey, " \n\t "),
		"payload truncated":         req(validKey, `{"packages":[`),
		"payload trailing data":     req(validKey, ok+`{}`),
		"arrays 10 000 deep":        req(validKey, nested("[", "]", 10000)),
		"objects 10 000 deep":       req(validKey, `{"a":`+strings.Repeat(`{"a":`, 10000)+`1`+strings.Repeat(`}`, 10001)),
		"129 levels (limit 128)":    req(validKey, nested("[", "]", 128)),
		"payload over the limit":    req(validKey, `{"a":"`+strings.Repeat("x", 1<<20)+`"}`),
		"payload 64 MiB":            req(validKey, `{"a":"`+strings.Repeat("x", 64<<20)+`"}`),
		"duplicate names":           req(validKey, `{"budget":1,"budget":2}`),
		"duplicate escaped names":   req(validKey, `{"budget":1,"\u0062udget":2}`),
		"duplicate idempotency_key": req(validKey, `{"idempotency_key":"`+validKey+`","idempotency_key":"another-key-0000000001"}`),
		"duplicate context":         req(validKey, `{"context":{"a":1},"context":{"a":2}}`),
		"invalid UTF-8 in a value":  req(validKey, "{\"brand\":\"\xff\xfe\"}"),
		"invalid UTF-8 in a name":   req(validKey, "{\"\xc0\xaf\":1}"),
		"lone surrogate":            req(validKey, `{"brand":"\ud800"}`),
		"raw control character":     req(validKey, "{\"brand\":\"a\x01b\"}"),
		"number 1e400":              req(validKey, `{"budget":1e400}`),
		"number -1e400":             req(validKey, `{"budget":-1e400}`),
		"number with 400 digits":    req(validKey, `{"budget":1`+strings.Repeat("0", 400)+`}`),
		"NaN":                       req(validKey, `{"budget":NaN}`),
		"Infinity":                  req(validKey, `{"budget":Infinity}`),
		"leading zero":              req(validKey, `{"budget":0123}`),
		"single quotes":             req(validKey, `{'budget':1}`),
	}
}

// Every hostile request is an INVALID_REQUEST, the handler does not run and
// the backend is never called: nothing is stored.
func TestHostileRequestsStoreNothing(t *testing.T) {
	store := memstore.New(nil)
	defer store.Close()
	backend := &idemtest.CountingBackend{Backend: store}
	g, err := idem.NewGuard(backend, &idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	for name, req := range hostileRequests() {
		t.Run(name, func(t *testing.T) {
			_, err := idem.Do(context.Background(), g, req, func(context.Context) (int, error) { runs++; return 1, nil })
			var e *idem.Error
			if !errors.As(err, &e) || e.Code != idem.CodeInvalidRequest || e.Recovery != idem.RecoveryCorrectable {
				t.Fatalf("error = %v, want a correctable INVALID_REQUEST", err)
			}
			if !errors.Is(err, idem.ErrInvalidPayload) && !errors.Is(err, idem.ErrInvalidKey) && !errors.Is(err, idem.ErrMissingKey) {
				t.Fatalf("error %v matches no validation sentinel", err)
			}
			wire, _ := json.Marshal(idem.Wire(err))
			if len(wire) > 300 {
				t.Fatalf("wire form is %d bytes: %.300s", len(wire), wire)
			}
			if k := req.Key; len(k) >= 8 && strings.Contains(string(wire)+err.Error(), k) {
				t.Fatalf("the error echoes the key: %s", wire)
			}
		})
	}
	if runs != 0 || backend.Calls() != 0 {
		t.Fatalf("hostile requests ran the handler %d times and reached the backend %d times; want 0 and 0", runs, backend.Calls())
	}
}

// Values at the edge that are valid JSON objects are accepted, with the
// meaning RFC 8785 gives them: numbers are IEEE 754 doubles, so two integer
// spellings that round to the same double are the same request.
func TestHostileButValidPayloads(t *testing.T) {
	same := func(a, b string) bool {
		ha, err := idem.CanonicalJSONSHA256([]byte(a))
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		hb, err := idem.CanonicalJSONSHA256([]byte(b))
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return ha == hb
	}
	if !same(`{"budget":9007199254740993}`, `{"budget":9007199254740992}`) {
		t.Error("2^53+1 and 2^53 hash differently; RFC 8785 compares numbers as doubles")
	}
	if same(`{"budget":9007199254740991}`, `{"budget":9007199254740990}`) {
		t.Error("two integers below 2^53 hash the same")
	}
	if !same(`{"budget":1e-400}`, `{"budget":0}`) {
		t.Error("an underflowing number is not 0")
	}
	for _, p := range []string{
		`{"budget":123456789012345678901234567890}`,
		`{"a":` + strings.Repeat("[", 127) + strings.Repeat("]", 127) + `}`, // 128 levels with the top object
		`{"name":"` + strings.Repeat("é", 1000) + `"}`,
		`{"\u0000":"NUL as a name is valid JSON"}`,
	} {
		if _, err := idem.CanonicalJSONSHA256([]byte(p)); err != nil {
			t.Errorf("%.60s...: %v", p, err)
		}
	}
}

// allocated returns the bytes and allocations per call of f.
func allocated(runs int, f func()) (bytesPerRun uint64, allocsPerRun float64) {
	f() // warm the canonicaliser's pool
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs), float64(after.Mallocs-before.Mallocs) / float64(runs)
}

// Rejecting a hostile payload costs a bounded amount of memory, whatever
// its size: a payload over MaxPayloadBytes is refused before it is parsed,
// and nesting stops at MaxDepth.
func TestHostilePayloadAllocationsAreBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation measurement")
	}
	store := memstore.New(nil)
	defer store.Close()
	g, err := idem.NewGuard(store, &idem.Config{Limiter: idem.Unlimited}) // MaxPayloadBytes: 1 MiB
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	do := func(payload string) func() {
		req := idem.Request{Principal: "alice", Key: validKey, Operation: "create_media_buy", Payload: json.RawMessage(payload)}
		return func() {
			if _, err := idem.Do(ctx, g, req, func(context.Context) (int, error) { return 1, nil }); !errors.Is(err, idem.ErrInvalidPayload) {
				t.Fatalf("error = %v, want ErrInvalidPayload", err)
			}
		}
	}
	for _, tc := range []struct {
		name     string
		payload  string
		maxBytes uint64
	}{
		{"64 MiB over the 1 MiB limit", `{"a":"` + strings.Repeat("x", 64<<20) + `"}`, 4 << 10},
		{"1 MiB + 1 over the limit", `{"a":"` + strings.Repeat("x", 1<<20) + `"}`, 4 << 10},
		{"arrays 10 000 deep", nested("[", "]", 10000), 4 << 10},
		{"objects 10 000 deep", `{"a":` + strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10001), 4 << 10},
		// Within the limit the canonicaliser works through the payload, in
		// at most about one payload's worth of buffer.
		{"1 MiB - 100 of invalid UTF-8 at the end", `{"a":"` + strings.Repeat("x", 1<<20-100) + "\xff\"}", 2 << 20},
		{"100 000 duplicate names", `{` + strings.Repeat(`"a":1,`, 100000) + `"a":1}`, 4 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, n := allocated(20, do(tc.payload))
			t.Logf("%d-byte payload: %d bytes in %.1f allocations per rejected request", len(tc.payload), b, n)
			if b > tc.maxBytes {
				t.Fatalf("%d bytes allocated per rejected request, want at most %d", b, tc.maxBytes)
			}
		})
	}
	// The same through testing.AllocsPerRun: refusing 64 MiB takes a
	// handful of allocations (the error and its message).
	huge := do(`{"a":"` + strings.Repeat("x", 64<<20) + `"}`)
	if n := testing.AllocsPerRun(10, huge); n > 10 {
		t.Errorf("refusing a 64 MiB payload: %.0f allocations per request, want at most 10", n)
	}
	// For scale: a valid 1 MiB payload (at the limit) is hashed in bounded
	// memory too; the canonicaliser's buffers are pooled.
	big := `{"a":"` + strings.Repeat("x", 1<<20-9) + `"}`
	var i atomic.Int64
	b, n := allocated(10, func() {
		req := idem.Request{Principal: "alice", Key: validKey + "-" + strings.Repeat("0", int(i.Add(1)%10)), Operation: "op", Payload: json.RawMessage(big)}
		if _, err := idem.Do(ctx, g, req, func(context.Context) (int, error) { return 1, nil }); err != nil && !errors.Is(err, idem.ErrConflict) {
			t.Fatal(err)
		}
	})
	t.Logf("valid %d-byte payload: %d bytes in %.1f allocations per request (claim, run, store)", len(big), b, n)
}

// timeoutErr is what net returns for a dial or read timeout: it matches
// context.DeadlineExceeded, though no context ended.
type timeoutErr struct{}

func (timeoutErr) Error() string        { return "dial tcp 127.0.0.1:6379: i/o timeout" }
func (timeoutErr) Timeout() bool        { return true }
func (timeoutErr) Is(target error) bool { return target == context.DeadlineExceeded }

type timingOutBackend struct{ backend.Backend }

func (timingOutBackend) Claim(context.Context, backend.Claim) (*backend.Entry, error) {
	return nil, fmt.Errorf("redisstore: claim: %w", timeoutErr{})
}

// A storage timeout is ErrStorage (SERVICE_UNAVAILABLE), not the caller's
// deadline: the caller's context is still alive.
func TestStorageTimeoutIsStorageFailure(t *testing.T) {
	mem := memstore.New(nil)
	t.Cleanup(func() { _ = mem.Close() })
	g, err := idem.NewGuard(timingOutBackend{mem}, &idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	_, err = idem.Do(context.Background(), g, idem.Request{Principal: "p", Key: "timeout-key-0000000001", Operation: "op", Payload: []byte(`{}`)},
		func(context.Context) (int, error) { return 1, nil })
	if !errors.Is(err, idem.ErrStorage) || idem.Wire(err).Code != string(idem.CodeServiceUnavailable) {
		t.Fatalf("a backend timeout with the caller's context alive: %v, want ErrStorage", err)
	}
	// The caller's own deadline stays the caller's.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = idem.Do(ctx, g, idem.Request{Principal: "p", Key: "timeout-key-0000000002", Operation: "op", Payload: []byte(`{}`)},
		func(context.Context) (int, error) { return 1, nil })
	if errors.Is(err, idem.ErrStorage) {
		t.Fatalf("a cancelled caller: %v, want the context's error", err)
	}
}
