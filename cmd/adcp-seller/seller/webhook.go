package seller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// event is one webhook delivery: a completion event for a media buy.
type event struct {
	mediaBuyID string
	url        string
	body       []byte // carries its own idempotency_key, stable across retries
}

// poster sends webhook events over HTTP.
type poster struct {
	client *http.Client
	log    *slog.Logger
}

// post delivers one event: a 2xx answer is a delivery, anything else an
// error to retry.
func (p *poster) post(ctx context.Context, e event) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(e.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		// A *url.Error prints the URL, which may carry the buyer's token in
		// its path or query: keep it out of logs and the outbox table.
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("webhook POST failed: %w", ue.Err)
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook receiver answered %s", resp.Status)
	}
	return nil
}

// backoff is the delay before attempt n+1 (n >= 1): 1 s, 2 s, 4 s, ... up to
// 5 minutes.
func backoff(attempts int) time.Duration {
	d := time.Second << min(attempts-1, 9)
	return min(d, 5*time.Minute)
}

// maxAttempts bounds retries of one event (about a day with the backoff).
const maxAttempts = 300

// memoryOutbox delivers events of the in-memory seller: after the buy is
// made, with retries and backoff, from this process. A crash loses queued
// events; the Postgres seller's outbox does not.
type memoryOutbox struct {
	p      *poster
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

func newMemoryOutbox(p *poster) *memoryOutbox {
	ctx, cancel := context.WithCancel(context.Background())
	return &memoryOutbox{p: p, ctx: ctx, cancel: cancel}
}

func (o *memoryOutbox) enqueue(e event) {
	o.wg.Go(func() {
		for attempt := 1; attempt <= maxAttempts; attempt++ {
			err := o.p.post(o.ctx, e)
			if err == nil {
				return
			}
			o.p.log.Warn("webhook delivery failed; will retry", "media_buy_id", e.mediaBuyID, "attempt", attempt, "error", err)
			select {
			case <-o.ctx.Done():
				return
			case <-time.After(backoff(attempt)):
			}
		}
	})
}

func (o *memoryOutbox) close() {
	o.cancel()
	o.wg.Wait()
}

// checkWebhookURL is the SSRF guard: only https to public hosts, unless
// allowLoopback (the -dev flag) also admits http and loopback addresses.
func checkWebhookURL(raw string, allowLoopback bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("push_notification_config.url is not an absolute URL")
	}
	if u.User != nil {
		return errors.New("push_notification_config.url must not carry credentials")
	}
	host := u.Hostname()
	loopback := host == "localhost"
	private := false
	if ip := net.ParseIP(host); ip != nil {
		loopback = ip.IsLoopback()
		private = ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast()
	}
	switch {
	case allowLoopback && loopback && (u.Scheme == "http" || u.Scheme == "https"):
		return nil
	case u.Scheme != "https":
		return errors.New("push_notification_config.url must use https")
	case loopback || private:
		return errors.New("push_notification_config.url must not point at a private or loopback address")
	}
	return nil
}

// webhookClient refuses, at connect time, addresses the SSRF guard forbids,
// so that a hostname resolving to a private address is caught too.
func webhookClient(allowLoopback bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, _ := net.SplitHostPort(address)
		ip := net.ParseIP(host)
		if ip == nil {
			return nil
		}
		if ip.IsLoopback() && allowLoopback {
			return nil
		}
		if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() {
			return fmt.Errorf("webhook address %s is not allowed", ip)
		}
		return nil
	}}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // never follow a redirect to somewhere else
		},
	}
}
