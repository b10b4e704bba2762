package webhook

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
)

func testSigner(t testing.TB, kid string, seed byte) *httpsig.Signer {
	t.Helper()
	s, err := httpsig.NewSigner(httpsig.ProfileWebhook, kid, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testJWKS(t testing.TB, signers ...*httpsig.Signer) *httpsig.JWKS {
	t.Helper()
	var keys []httpsig.JWK
	for _, s := range signers {
		k, err := s.PublicJWK()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	set, err := httpsig.NewJWKS(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

var devURLs = &URLPolicy{AllowLoopback: true}

func testSender(t testing.TB, signer *httpsig.Signer) *Sender {
	t.Helper()
	s, err := NewSender(&SenderConfig{Signer: signer, URLs: devURLs, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type captured struct {
	body     []byte
	header   http.Header
	verified *httpsig.Verified
	err      error
}

// A receiver that answers 503 twice and then 200 gets three attempts with
// byte-identical bodies, each with a valid signature of its own (verified
// against a JWKS built from the public key) and a fresh nonce.
func TestSendRetriesIdenticalBodyFreshSignature(t *testing.T) {
	signer := testSigner(t, "seller-2026", 1)
	verifier := httpsig.NewVerifier(httpsig.ProfileWebhook, testJWKS(t, signer))
	var mu sync.Mutex
	var got []captured
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		v, err := verifier.Verify(r.Context(), r, body)
		mu.Lock()
		got = append(got, captured{body, r.Header.Clone(), v, err})
		n := len(got)
		mu.Unlock()
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	d, err := NewDelivery(testConfig(srv.URL+"/hooks/route_abc"), testNotification())
	if err != nil {
		t.Fatal(err)
	}
	s := testSender(t, signer)
	for attempt := 1; ; attempt++ {
		err := s.Send(context.Background(), d)
		if err == nil {
			break
		}
		var de *DeliveryError
		if !errors.As(err, &de) || de.Permanent || de.StatusCode != 503 || attempt > 2 {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
	}
	if len(got) != 3 {
		t.Fatalf("%d attempts, want 3", len(got))
	}
	nonces := map[string]bool{}
	for i, c := range got {
		if c.err != nil {
			t.Errorf("attempt %d: signature does not verify: %v", i+1, c.err)
			continue
		}
		if !bytes.Equal(c.body, d.Body) {
			t.Errorf("attempt %d: body differs from the event's bytes", i+1)
		}
		var ev Event
		if err := json.Unmarshal(c.body, &ev); err != nil || ev.IdempotencyKey != d.IdempotencyKey {
			t.Errorf("attempt %d: idempotency_key %q, want %q", i+1, ev.IdempotencyKey, d.IdempotencyKey)
		}
		if c.verified.KeyID != "seller-2026" || c.verified.Params.Tag != httpsig.TagWebhook {
			t.Errorf("attempt %d: verified %+v", i+1, c.verified.Params)
		}
		if ct := c.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("attempt %d: Content-Type %q", i+1, ct)
		}
		nonces[c.verified.Params.Nonce] = true
	}
	if len(nonces) != 3 {
		t.Errorf("%d distinct nonces over 3 attempts", len(nonces))
	}
}

func TestClassify(t *testing.T) {
	challenge := func(v string) http.Header { return http.Header{"Www-Authenticate": {v}} }
	for _, tc := range []struct {
		status    int
		header    http.Header
		delivered bool
		permanent bool
		code      string
	}{
		{200, nil, true, false, ""},
		{201, nil, true, false, ""},
		{202, nil, true, false, ""},
		{204, nil, true, false, ""},
		{301, nil, false, true, ""},
		{302, nil, false, true, ""},
		{307, nil, false, true, ""},
		{400, nil, false, true, ""},
		{401, nil, false, false, ""}, // no signature code: a transient receiver configuration error
		{401, challenge(`Bearer realm="x"`), false, false, ""},
		{401, challenge(`Signature error="webhook_signature_invalid"`), false, true, "webhook_signature_invalid"},
		{401, challenge(`Signature error="webhook_mode_mismatch"`), false, true, "webhook_mode_mismatch"},
		{401, challenge(`signature ERROR=webhook_signature_key_unknown`), false, true, "webhook_signature_key_unknown"},
		{401, challenge(`Signature error="request_signature_invalid"`), false, false, ""},
		{403, nil, false, true, ""},
		{404, nil, false, true, ""},
		{405, nil, false, true, ""},
		{408, nil, false, false, ""},
		{409, nil, false, true, ""},
		{410, nil, false, true, ""},
		{413, nil, false, true, ""},
		{415, nil, false, true, ""},
		{422, nil, false, true, ""},
		{425, nil, false, false, ""},
		{429, nil, false, false, ""},
		{500, nil, false, false, ""},
		{502, nil, false, false, ""},
		{503, nil, false, false, ""},
		{504, nil, false, false, ""},
		{599, nil, false, false, ""},
	} {
		err := classify(tc.status, tc.header)
		if (err == nil) != tc.delivered {
			t.Errorf("%d %v: err = %v", tc.status, tc.header, err)
			continue
		}
		if err == nil {
			continue
		}
		var de *DeliveryError
		if !errors.As(err, &de) || de.Permanent != tc.permanent || de.StatusCode != tc.status || de.Code != tc.code || IsPermanent(err) != tc.permanent {
			t.Errorf("%d %v: %+v, want permanent=%v code=%q", tc.status, tc.header, de, tc.permanent, tc.code)
		}
	}
}

func TestSendNetworkFailures(t *testing.T) {
	s := testSender(t, testSigner(t, "k", 1))
	// A port with no listener: retryable, and the message has no URL.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = s.Send(context.Background(), Delivery{URL: "http://" + addr + "/hooks/tok_SECRET?k=tok_SECRET", Body: []byte(`{}`)})
	if err == nil || IsPermanent(err) {
		t.Fatalf("refused connection: %v, want retryable", err)
	}
	if strings.Contains(err.Error(), "tok_SECRET") || strings.Contains(err.Error(), addr) {
		t.Errorf("error %q echoes the URL", err)
	}
	// A receiver slower than the timeout: retryable.
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
	defer slow.Close()
	defer close(block)
	fast, err := NewSender(&SenderConfig{URLs: devURLs, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := fast.Send(context.Background(), Delivery{URL: slow.URL, Body: []byte(`{}`)}); err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("timeout: %v", err)
	}
	// A canceled context: the error matches it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := fast.Send(ctx, Delivery{URL: slow.URL, Body: []byte(`{}`)}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
	// Refused before any connection: the guard, an empty body.
	for _, d := range []Delivery{{URL: "https://10.0.0.1/h", Body: []byte(`{}`)}, {URL: "http://buyer.example/h", Body: []byte(`{}`)}, {URL: slow.URL}} {
		if err := s.Send(context.Background(), d); !IsPermanent(err) {
			t.Errorf("%+v: %v, want permanent", d, err)
		}
	}
}

// A redirect is never followed: the 3xx is the answer, and permanent.
func TestSendNoRedirect(t *testing.T) {
	var hit atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit.Store(true) }))
	defer target.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	err := testSender(t, testSigner(t, "k", 1)).Send(context.Background(), Delivery{URL: redirect.URL, Body: []byte(`{}`)})
	var de *DeliveryError
	if !errors.As(err, &de) || de.StatusCode != http.StatusTemporaryRedirect || !de.Permanent || hit.Load() {
		t.Fatalf("err = %v, target hit = %v", err, hit.Load())
	}
}

func TestRetryPolicy(t *testing.T) {
	var p RetryPolicy // defaults: 2 s doubling to 1 h, 24 h horizon
	for attempt, nominal := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 3: 8 * time.Second, 12: time.Hour, 500: time.Hour} {
		for range 50 {
			d := p.Delay(attempt)
			if d < nominal/2 || d > nominal {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", attempt, d, nominal/2, nominal)
			}
		}
	}
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	next, ok := p.Next(3, first, first.Add(time.Minute))
	if !ok || next.Before(first.Add(time.Minute+4*time.Second)) || next.After(first.Add(time.Minute+8*time.Second)) {
		t.Errorf("Next(3) = %v, %v", next, ok)
	}
	// Never past the horizon.
	next, ok = p.Next(40, first, first.Add(24*time.Hour-40*time.Minute))
	if !ok || next.After(first.Add(24*time.Hour)) {
		t.Errorf("Next near the horizon = %v, %v", next, ok)
	}
	if _, ok := p.Next(40, first, first.Add(24*time.Hour-10*time.Minute)); ok {
		t.Error("Next schedules an attempt past the horizon")
	}
	if _, ok := p.Next(1, first, first.Add(25*time.Hour)); ok {
		t.Error("Next schedules an attempt after the horizon")
	}
	for _, bad := range []RetryPolicy{{Horizon: time.Hour}, {Horizon: 8 * 24 * time.Hour}, {Horizon: 24*time.Hour + time.Millisecond}, {Initial: time.Hour, Max: time.Minute}, {Initial: -1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validates", bad)
		}
		if _, err := NewSender(&SenderConfig{Retry: bad}); err == nil {
			t.Errorf("NewSender accepts %+v", bad)
		}
	}
}

func TestCapability(t *testing.T) {
	s, err := NewSender(&SenderConfig{Signer: testSigner(t, "k", 1), Retry: RetryPolicy{Horizon: 48 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(s.Capability())
	const want = `{"supported":true,"profile":"adcp/webhook-signing/v1","algorithms":["ed25519"],"legacy_hmac_fallback":false,"delivery_retry_horizon_seconds":172800}`
	if string(raw) != want {
		t.Errorf("capability %s, want %s", raw, want)
	}
	unsigned, _ := NewSender(nil)
	if c := unsigned.Capability(); c.Supported || c.DeliveryRetryHorizonSeconds != 86400 {
		t.Errorf("unsigned capability %+v", c)
	}
	reqSigner, _ := httpsig.NewSigner(httpsig.ProfileRequest, "k", ed25519.NewKeyFromSeed(make([]byte, 32)))
	if _, err := NewSender(&SenderConfig{Signer: reqSigner}); err == nil {
		t.Error("NewSender accepts a request-profile signer")
	}
}
