package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

// rig is a buyer endpoint: a Receiver over a counting handler, behind a
// test server, and a seller's Sender pointed at it.
type rig struct {
	srv     *httptest.Server
	signer  *httpsig.Signer
	sender  *Sender
	calls   atomic.Int32
	handler func(w http.ResponseWriter, r *http.Request)
	mu      sync.Mutex
	seen    []*Incoming
}

func newRig(t *testing.T, cfg *idem.Config) *rig {
	t.Helper()
	rg := &rig{signer: testSigner(t, "seller-2026", 1)}
	store := memstore.New(nil)
	t.Cleanup(func() { _ = store.Close() })
	guard, err := idem.NewGuard(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rg.calls.Add(1)
		in, ok := IncomingFromContext(r.Context())
		body, _ := io.ReadAll(r.Body)
		if !ok || in.Event == nil || in.Event.IdempotencyKey == "" || !bytes.Contains(body, []byte(in.Event.IdempotencyKey)) {
			http.Error(w, "no incoming delivery", http.StatusInternalServerError)
			return
		}
		rg.mu.Lock()
		rg.seen = append(rg.seen, in)
		rg.mu.Unlock()
		if rg.handler != nil {
			rg.handler(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"processed":%q,"n":%d}`, in.Event.IdempotencyKey, rg.calls.Load())
	})
	rc, err := NewReceiver(next, &ReceiverConfig{
		Verifier: httpsig.NewVerifier(httpsig.ProfileWebhook, testJWKS(t, rg.signer)),
		Guard:    guard,
	})
	if err != nil {
		t.Fatal(err)
	}
	rg.srv = httptest.NewServer(rc)
	t.Cleanup(rg.srv.Close)
	rg.sender = testSender(t, rg.signer)
	return rg
}

func (rg *rig) delivery(t *testing.T) Delivery {
	t.Helper()
	d, err := NewDelivery(testConfig(rg.srv.URL+"/hooks/route_abc"), testNotification())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// post signs body with signer (nil: unsigned) and posts it, returning the
// answer's status, WWW-Authenticate and body.
func post(t *testing.T, signer *httpsig.Signer, url string, body []byte, mutate func(*http.Request)) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if signer != nil {
		if _, err := signer.Sign(req, body); err != nil {
			t.Fatal(err)
		}
	}
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestReceiverProcessesOnceAndReplays(t *testing.T) {
	rg := newRig(t, nil)
	d := rg.delivery(t)
	status, _, first := post(t, rg.signer, d.URL, d.Body, nil)
	if status != http.StatusOK || !strings.Contains(first, d.IdempotencyKey) {
		t.Fatalf("first delivery: %d %s", status, first)
	}
	// The sender's retry (fresh signature, same body) and the Sender
	// itself both get the stored answer; the handler ran once.
	status, h, again := post(t, rg.signer, d.URL, d.Body, nil)
	if status != http.StatusOK || again != first || h.Get("Content-Type") != "application/json" {
		t.Errorf("duplicate: %d %s, want the stored answer %s", status, again, first)
	}
	if err := rg.sender.Send(context.Background(), d); err != nil {
		t.Errorf("Sender on a duplicate: %v", err)
	}
	if n := rg.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times", n)
	}
	if in := rg.seen[0]; in.Sender != "seller-2026" || in.Signature.KeyID != "seller-2026" || in.Event.OperationID != "op_456" {
		t.Errorf("incoming %+v", in)
	}
}

func TestReceiverConcurrentDuplicates(t *testing.T) {
	for _, policy := range []idem.DuplicatePolicy{idem.WaitThenReplay, idem.RejectInFlight} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) {
			rg := newRig(t, &idem.Config{Duplicates: policy, Limiter: idem.Unlimited})
			release := make(chan struct{})
			rg.handler = func(w http.ResponseWriter, _ *http.Request) {
				<-release
				w.WriteHeader(http.StatusAccepted)
			}
			d := rg.delivery(t)
			const n = 64
			var wg sync.WaitGroup
			results := make([]error, n)
			for i := range n {
				wg.Go(func() { results[i] = rg.sender.Send(context.Background(), d) })
			}
			time.Sleep(50 * time.Millisecond) // let duplicates pile up behind the first
			close(release)
			wg.Wait()
			for i, err := range results {
				var de *DeliveryError
				if err != nil && (!errors.As(err, &de) || de.StatusCode != http.StatusServiceUnavailable || de.Permanent) {
					t.Errorf("duplicate %d: %v, want delivered or a retryable 503", i, err)
				}
			}
			// The sender retries the 503s: every retry is now acknowledged.
			for i, err := range results {
				if err != nil {
					if err := rg.sender.Send(context.Background(), d); err != nil {
						t.Errorf("retry of %d: %v", i, err)
					}
				}
			}
			if c := rg.calls.Load(); c != 1 {
				t.Errorf("handler ran %d times for one delivery", c)
			}
		})
	}
}

// While the first copy is processed, a duplicate gets 503 with Retry-After
// (RejectInFlight), and afterwards the stored answer.
func TestReceiverInFlight503(t *testing.T) {
	rg := newRig(t, &idem.Config{Duplicates: idem.RejectInFlight})
	entered, release := make(chan struct{}), make(chan struct{})
	rg.handler = func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		w.WriteHeader(http.StatusOK)
	}
	d := rg.delivery(t)
	done := make(chan error)
	go func() { done <- rg.sender.Send(context.Background(), d) }()
	<-entered
	status, h, _ := post(t, rg.signer, d.URL, d.Body, nil)
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Errorf("duplicate in flight: %d Retry-After=%q, want 503 with Retry-After", status, h.Get("Retry-After"))
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if status, _, _ := post(t, rg.signer, d.URL, d.Body, nil); status != http.StatusOK {
		t.Errorf("duplicate after: %d", status)
	}
}

func TestReceiverConflict(t *testing.T) {
	rg := newRig(t, nil)
	d := rg.delivery(t)
	if err := rg.sender.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(d.Body, &ev); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(){
		"message": func() { ev["message"] = "something else" },
		"context": func() { ev["context"] = map[string]any{"trace_id": "t-2"} }, // excluded from request equivalence, not here
	} {
		change()
		changed, _ := json.Marshal(ev)
		err := rg.sender.Send(context.Background(), Delivery{URL: d.URL, Body: changed})
		var de *DeliveryError
		if !errors.As(err, &de) || de.StatusCode != http.StatusConflict || !de.Permanent {
			t.Errorf("%s changed under the same key: %v, want a permanent 409", name, err)
		}
	}
	// The first binding stands.
	if err := rg.sender.Send(context.Background(), d); err != nil {
		t.Errorf("original after conflicts: %v", err)
	}
	if n := rg.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestReceiverRejectsSignatures(t *testing.T) {
	rg := newRig(t, nil)
	d := rg.delivery(t)
	stranger := testSigner(t, "stranger", 9)
	impostor := testSigner(t, "seller-2026", 9) // right kid, wrong key
	tamper := func(r *http.Request) {
		b := bytes.Replace(d.Body, []byte("Media buy created"), []byte("Media buy CREATED"), 1)
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	}
	retag := func(r *http.Request) {
		r.Header.Set("Signature-Input", strings.Replace(r.Header.Get("Signature-Input"), httpsig.TagWebhook, httpsig.TagRequest, 1))
	}
	for _, tc := range []struct {
		name   string
		signer *httpsig.Signer
		mutate func(*http.Request)
		code   string
	}{
		{"unsigned", nil, nil, "webhook_mode_mismatch"},
		{"unknown key", stranger, nil, "webhook_signature_key_unknown"},
		{"wrong key", impostor, nil, "webhook_signature_invalid"},
		{"tampered body", rg.signer, tamper, "webhook_signature_digest_mismatch"},
		{"request tag", rg.signer, retag, "webhook_signature_tag_invalid"},
		{"signature only", rg.signer, func(r *http.Request) { r.Header.Del("Signature-Input") }, "webhook_signature_header_malformed"},
	} {
		status, h, _ := post(t, tc.signer, d.URL, d.Body, tc.mutate)
		if want := `Signature error="` + tc.code + `"`; status != http.StatusUnauthorized || h.Get("WWW-Authenticate") != want {
			t.Errorf("%s: %d %q, want 401 %s", tc.name, status, h.Get("WWW-Authenticate"), want)
		}
	}
	// The sender treats such an answer as permanent.
	s := testSender(t, stranger)
	if err := s.Send(context.Background(), d); !IsPermanent(err) {
		t.Errorf("sender with an unknown key: %v, want permanent", err)
	}
	if n := rg.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for rejected deliveries", n)
	}
}

// The same signed request sent twice: the second is a replayed nonce,
// whatever the dedupe would have said.
func TestReceiverNonceReplay(t *testing.T) {
	rg := newRig(t, nil)
	d := rg.delivery(t)
	req, _ := http.NewRequest(http.MethodPost, d.URL, nil)
	req.Header.Set("Content-Type", "application/json")
	if _, err := rg.signer.Sign(req, d.Body); err != nil {
		t.Fatal(err)
	}
	replay := func(r *http.Request) {
		r.Header.Set("Signature-Input", req.Header.Get("Signature-Input"))
		r.Header.Set("Signature", req.Header.Get("Signature"))
		r.Header.Set("Content-Digest", req.Header.Get("Content-Digest"))
	}
	if status, _, _ := post(t, nil, d.URL, d.Body, replay); status != http.StatusOK {
		t.Fatalf("first: %d", status)
	}
	status, h, _ := post(t, nil, d.URL, d.Body, replay)
	if status != http.StatusUnauthorized || h.Get("WWW-Authenticate") != `Signature error="webhook_signature_replayed"` {
		t.Errorf("replay: %d %q", status, h.Get("WWW-Authenticate"))
	}
}

// A handler that fails stores nothing: the sender's retry runs it again.
func TestReceiverHandlerFailureNotStored(t *testing.T) {
	rg := newRig(t, nil)
	rg.handler = func(w http.ResponseWriter, _ *http.Request) {
		if rg.calls.Load() == 1 {
			http.Error(w, "database down", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
	d := rg.delivery(t)
	err := rg.sender.Send(context.Background(), d)
	var de *DeliveryError
	if !errors.As(err, &de) || de.StatusCode != http.StatusInternalServerError || de.Permanent {
		t.Fatalf("first: %v", err)
	}
	if err := rg.sender.Send(context.Background(), d); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if status, _, _ := post(t, rg.signer, d.URL, d.Body, nil); status != http.StatusNoContent {
		t.Errorf("duplicate after success: %d, want the stored 204", status)
	}
	if n := rg.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

func TestReceiverRejectsBeforeVerifying(t *testing.T) {
	rg := newRig(t, nil)
	d := rg.delivery(t)
	for _, tc := range []struct {
		name   string
		method string
		ctype  string
		body   []byte
		status int
	}{
		{"GET", http.MethodGet, "application/json", nil, http.StatusMethodNotAllowed},
		{"text", http.MethodPost, "text/plain", d.Body, http.StatusUnsupportedMediaType},
		{"no type", http.MethodPost, "", d.Body, http.StatusUnsupportedMediaType},
		{"too large", http.MethodPost, "application/json", bytes.Repeat([]byte(" "), DefaultMaxBodyBytes+1), http.StatusRequestEntityTooLarge},
	} {
		req, _ := http.NewRequest(tc.method, d.URL, bytes.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
	// A signed body that is not a webhook envelope: 400 with the reason.
	status, _, body := post(t, rg.signer, d.URL, []byte(`{"notification_type":"scheduled"}`), nil)
	if status != http.StatusBadRequest || !strings.Contains(body, "missing_envelope_fields") {
		t.Errorf("bare result: %d %s", status, body)
	}
	// A media type parameter is fine (the signature covers the header).
	req, _ := http.NewRequest(http.MethodPost, d.URL, nil)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if _, err := rg.signer.Sign(req, d.Body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("valid delivery with charset: %d", resp.StatusCode)
	}
	if n := rg.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times", n)
	}
}

// Senders are separate key spaces: one sender's key never answers
// another's delivery.
func TestReceiverScopesBySender(t *testing.T) {
	a, b := testSigner(t, "seller-a", 1), testSigner(t, "seller-b", 2)
	store := memstore.New(nil)
	defer store.Close()
	guard, _ := idem.NewGuard(store, nil)
	var calls atomic.Int32
	rc, err := NewReceiver(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		in, _ := IncomingFromContext(r.Context())
		io.WriteString(w, in.Sender)
	}), &ReceiverConfig{
		Verifier: httpsig.NewVerifier(httpsig.ProfileWebhook, testJWKS(t, a, b)),
		Guard:    guard,
		SenderID: func(_ *http.Request, v *httpsig.Verified) (string, error) {
			return "https://" + v.KeyID + ".example/agent", nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d, _ := NewDelivery(testConfig(srv.URL), testNotification())
	_, _, fromA := post(t, a, d.URL, d.Body, nil)
	_, _, fromB := post(t, b, d.URL, d.Body, nil)
	if fromA != "https://seller-a.example/agent" || fromB != "https://seller-b.example/agent" || calls.Load() != 2 {
		t.Errorf("a=%q b=%q calls=%d", fromA, fromB, calls.Load())
	}
}

func TestNewReceiverValidates(t *testing.T) {
	store := memstore.New(nil)
	defer store.Close()
	guard, _ := idem.NewGuard(store, nil)
	ok := http.NotFoundHandler()
	keys := testJWKS(t, testSigner(t, "k", 1))
	for _, tc := range []struct {
		next http.Handler
		cfg  *ReceiverConfig
	}{
		{ok, nil},
		{ok, &ReceiverConfig{Guard: guard}},
		{ok, &ReceiverConfig{Verifier: httpsig.NewVerifier(httpsig.ProfileWebhook, keys)}},
		{ok, &ReceiverConfig{Verifier: httpsig.NewVerifier(httpsig.ProfileRequest, keys), Guard: guard}},
		{nil, &ReceiverConfig{Verifier: httpsig.NewVerifier(httpsig.ProfileWebhook, keys), Guard: guard}},
	} {
		if _, err := NewReceiver(tc.next, tc.cfg); err == nil {
			t.Errorf("NewReceiver(%v, %+v) accepted", tc.next, tc.cfg)
		}
	}
}

type failingNonces struct{}

func (failingNonces) AtCapacity(context.Context, string) (bool, error) { return false, nil }
func (failingNonces) Remember(context.Context, string, string, time.Time) error {
	return errors.New("replay cache unreachable")
}

// Operational failures are 503 (retry later), never 401; a SenderID that
// cannot map the key rejects it with the code of its error.
func TestReceiverOperationalFailures(t *testing.T) {
	signer := testSigner(t, "seller-2026", 1)
	store := memstore.New(nil)
	defer store.Close()
	guard, _ := idem.NewGuard(store, nil)
	newServer := func(nonces httpsig.NonceStore, senderID func(*http.Request, *httpsig.Verified) (string, error)) *httptest.Server {
		v := httpsig.NewVerifier(httpsig.ProfileWebhook, testJWKS(t, signer))
		if nonces != nil {
			v.Nonces = nonces
		}
		rc, err := NewReceiver(http.NotFoundHandler(), &ReceiverConfig{Verifier: v, Guard: guard, SenderID: senderID})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(rc)
		t.Cleanup(srv.Close)
		return srv
	}
	d, _ := NewDelivery(testConfig("https://buyer.example/"), testNotification())
	for _, tc := range []struct {
		name      string
		srv       *httptest.Server
		status    int
		challenge string
	}{
		{"nonce store down", newServer(failingNonces{}, nil), http.StatusServiceUnavailable, ""},
		{"unmapped key", newServer(nil, func(*http.Request, *httpsig.Verified) (string, error) {
			return "", fmt.Errorf("no agents[] entry for this key: %w", httpsig.ErrKeyUnknown)
		}), http.StatusUnauthorized, `Signature error="webhook_signature_key_unknown"`},
		{"directory down", newServer(nil, func(*http.Request, *httpsig.Verified) (string, error) {
			return "", errors.New("brand.json fetch failed")
		}), http.StatusServiceUnavailable, ""},
	} {
		status, h, _ := post(t, signer, tc.srv.URL, d.Body, nil)
		if status != tc.status || h.Get("WWW-Authenticate") != tc.challenge {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, h.Get("WWW-Authenticate"), tc.status, tc.challenge)
		}
		if status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", tc.name)
		}
	}
}
