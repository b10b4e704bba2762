package riverdelivery

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/adcp-go/idempotency/webhook"
)

// The job's stored form keeps the body byte for byte, whatever it holds
// (jsonb would normalise an embedded JSON value; a base64 string it keeps).
func TestArgsRoundTrip(t *testing.T) {
	body := []byte("{\"b\": 1,  \"a\":\"\\u00e9\"}\n")
	a := Args{URL: "https://buyer.example/h?t=1", IdempotencyKey: "whk_0123456789abcdef", Body: body}
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back Args
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	d := back.Delivery()
	if string(back.Body) != string(body) || d.URL != a.URL || d.IdempotencyKey != a.IdempotencyKey || string(d.Body) != string(body) {
		t.Errorf("round trip: %+v", back)
	}
	if a.Kind() != "adcp_webhook_delivery" {
		t.Errorf("Kind changed: %q", a.Kind())
	}
	if o := a.InsertOpts(); o.MaxAttempts != MaxAttempts || !o.UniqueOpts.ByArgs {
		t.Errorf("InsertOpts %+v", o)
	}
}

func TestEnqueueValidates(t *testing.T) {
	for _, d := range []webhook.Delivery{
		{IdempotencyKey: "whk_0123456789abcdef", Body: []byte(`{}`)},
		{URL: "https://buyer.example", Body: []byte(`{}`)},
		{URL: "https://buyer.example", IdempotencyKey: "bad key!", Body: []byte(`{}`)},
		{URL: "https://buyer.example", IdempotencyKey: "whk_0123456789abcdef"},
	} {
		if _, err := Enqueue(context.Background(), nil, nil, d, nil); !errors.Is(err, ErrInvalidDelivery) {
			t.Errorf("%+v: %v", d, err)
		}
	}
}

func job(url string, attempt int, created time.Time) *river.Job[Args] {
	return &river.Job[Args]{
		JobRow: &rivertype.JobRow{ID: 1, Attempt: attempt, CreatedAt: created, Kind: Kind},
		Args:   Args{URL: url, IdempotencyKey: "whk_0123456789abcdef", Body: []byte(`{"idempotency_key":"whk_0123456789abcdef"}`)},
	}
}

func TestWorker(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	sender, err := webhook.NewSender(&webhook.SenderConfig{URLs: &webhook.URLPolicy{AllowLoopback: true}})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWorker(sender)
	ctx := context.Background()
	now := time.Now()

	status.Store(http.StatusNoContent)
	if err := w.Work(ctx, job(srv.URL, 1, now)); err != nil {
		t.Errorf("2xx: %v", err)
	}

	status.Store(http.StatusServiceUnavailable)
	err = w.Work(ctx, job(srv.URL, 1, now))
	var cancel *rivertype.JobCancelError
	if err == nil || errors.As(err, &cancel) {
		t.Errorf("503: %v, want a retryable error", err)
	}
	if strings.Contains(err.Error(), srv.URL) {
		t.Errorf("error %q carries the URL", err)
	}
	if next := w.NextRetry(job(srv.URL, 3, now)); next.Before(now.Add(4*time.Second)) || next.After(time.Now().Add(8*time.Second)) {
		t.Errorf("NextRetry after attempt 3 = %v from now", next.Sub(now))
	}

	status.Store(http.StatusNotFound)
	if err := w.Work(ctx, job(srv.URL, 1, now)); !errors.As(err, &cancel) || !webhook.IsPermanent(err) {
		t.Errorf("404: %v, want the job cancelled", err)
	}

	// Past the horizon: given up without an attempt; near it, a retryable
	// failure gives up instead of scheduling past it.
	status.Store(http.StatusServiceUnavailable)
	if err := w.Work(ctx, job(srv.URL, 30, now.Add(-25*time.Hour))); !errors.As(err, &cancel) || !errors.Is(err, ErrHorizonPassed) {
		t.Errorf("past the horizon: %v", err)
	}
	if err := w.Work(ctx, job(srv.URL, 30, now.Add(-24*time.Hour+10*time.Minute))); !errors.As(err, &cancel) || !errors.Is(err, ErrHorizonPassed) {
		t.Errorf("last retry would pass the horizon: %v", err)
	}
	if d := w.Timeout(job(srv.URL, 1, now)); d <= sender.Timeout() {
		t.Errorf("Timeout %v", d)
	}
}
