package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
)

// Bounds of delivery_retry_horizon_seconds in AdCP 3.2.
const (
	MinRetryHorizon = 24 * time.Hour
	MaxRetryHorizon = 7 * 24 * time.Hour
)

// RetryPolicy is the schedule of further attempts after a retryable
// failure: exponential backoff with jitter, never past the horizon. The
// zero value is the default policy; a zero field means its default.
type RetryPolicy struct {
	// Initial is the nominal delay after the first failed attempt; each
	// further failure doubles it. Defaults to 2 seconds.
	Initial time.Duration
	// Max caps the nominal delay. Defaults to 1 hour.
	Max time.Duration
	// Horizon is the declared delivery_retry_horizon_seconds: no attempt
	// starts later than Horizon after the first one. Whole seconds, from
	// 24 hours to 7 days. Defaults to 24 hours.
	Horizon time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	p.Initial = cmp.Or(p.Initial, 2*time.Second)
	p.Max = cmp.Or(p.Max, time.Hour)
	p.Horizon = cmp.Or(p.Horizon, MinRetryHorizon)
	return p
}

// Validate reports whether the policy's fields are in range.
func (p RetryPolicy) Validate() error {
	p = p.withDefaults()
	switch {
	case p.Initial < 0 || p.Max < 0:
		return errors.New("webhook: RetryPolicy delays must be positive")
	case p.Max < p.Initial:
		return errors.New("webhook: RetryPolicy.Max is below Initial")
	case p.Horizon < MinRetryHorizon || p.Horizon > MaxRetryHorizon || p.Horizon%time.Second != 0:
		return errors.New("webhook: RetryPolicy.Horizon must be whole seconds from 24 hours to 7 days")
	}
	return nil
}

// nominal is the delay after attempt n before jitter.
func (p RetryPolicy) nominal(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.Initial
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// Delay returns how long to wait after the attempt-th attempt (1 for the
// first) failed: the nominal delay Initial·2^(attempt−1), capped at Max,
// less a random part of up to half of it, so that senders that failed
// together do not retry together.
func (p RetryPolicy) Delay(attempt int) time.Duration {
	d := p.nominal(max(attempt, 1))
	return d - rand.N(d/2+1)
}

// Next returns when the attempt after the attempt-th one should start, given
// when the first attempt started, and false if that would be past the
// horizon: the delivery must then be given up.
func (p RetryPolicy) Next(attempt int, first, now time.Time) (time.Time, bool) {
	p = p.withDefaults()
	deadline := first.Add(p.Horizon)
	if now.Add(p.nominal(max(attempt, 1)) / 2).After(deadline) {
		return time.Time{}, false
	}
	next := now.Add(p.Delay(attempt))
	if next.After(deadline) {
		next = deadline
	}
	return next, true
}

// Capability is the webhook_signing block of get_adcp_capabilities.
type Capability struct {
	// Supported: outbound webhooks are signed with the RFC 9421 webhook
	// profile.
	Supported bool `json:"supported"`
	// Profile is "adcp/webhook-signing/v1".
	Profile string `json:"profile,omitempty"`
	// Algorithms are the signing algorithms in use.
	Algorithms []string `json:"algorithms,omitempty"`
	// LegacyHMACFallback is always false: the deprecated HMAC scheme is not
	// offered.
	LegacyHMACFallback bool `json:"legacy_hmac_fallback"`
	// DeliveryRetryHorizonSeconds is RetryPolicy.Horizon.
	DeliveryRetryHorizonSeconds int `json:"delivery_retry_horizon_seconds,omitempty"`
}

// SenderConfig configures a Sender. A nil *SenderConfig, and every zero
// field, means the default.
type SenderConfig struct {
	// Signer signs every attempt (httpsig.ProfileWebhook). AdCP 3 requires
	// signed webhooks; nil sends them unsigned, which receivers reject, and
	// makes Capability declare supported false. For tests only.
	Signer *httpsig.Signer
	// URLs is the SSRF guard. Defaults to the strict policy.
	URLs *URLPolicy
	// Retry is the retry schedule and declared horizon. Defaults to
	// RetryPolicy{}.
	Retry RetryPolicy
	// Timeout bounds one attempt, from connecting to reading the answer.
	// Defaults to 10 seconds.
	Timeout time.Duration
}

// Sender delivers webhook events. It is safe for concurrent use.
type Sender struct {
	signer  *httpsig.Signer
	urls    *URLPolicy
	retry   RetryPolicy
	timeout time.Duration
	client  *http.Client
}

// NewSender returns a Sender configured by cfg.
func NewSender(cfg *SenderConfig) (*Sender, error) {
	if cfg == nil {
		cfg = &SenderConfig{}
	}
	if err := cfg.Retry.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("webhook: SenderConfig.Timeout must not be negative")
	}
	if s := cfg.Signer; s != nil && (s.Profile != httpsig.ProfileWebhook || s.Alg() == "") {
		return nil, errors.New("webhook: SenderConfig.Signer must be an httpsig.ProfileWebhook signer with an Ed25519 or P-256 key")
	}
	s := &Sender{
		signer:  cfg.Signer,
		urls:    cfg.URLs,
		retry:   cfg.Retry.withDefaults(),
		timeout: cmp.Or(cfg.Timeout, 10*time.Second),
	}
	s.client = s.urls.Client(s.timeout)
	return s, nil
}

// CloseIdleConnections closes the keep-alive connections the sender holds
// to receivers. Call it when done with the Sender (they would otherwise
// linger, with their goroutines, until they time out); the Sender stays
// usable.
func (s *Sender) CloseIdleConnections() { s.client.CloseIdleConnections() }

// Retry returns the sender's retry policy, defaults applied.
func (s *Sender) Retry() RetryPolicy { return s.retry }

// Timeout returns the bound of one attempt.
func (s *Sender) Timeout() time.Duration { return s.timeout }

// Capability returns the webhook_signing block to declare in
// get_adcp_capabilities.
func (s *Sender) Capability() Capability {
	c := Capability{DeliveryRetryHorizonSeconds: int(s.retry.Horizon / time.Second)}
	if s.signer != nil {
		c.Supported = true
		c.Profile = httpsig.TagWebhook
		c.Algorithms = []string{s.signer.Alg()}
	}
	return c
}

// DeliveryError is a failed attempt. Its message says what happened (the
// receiver's status, or the kind of network failure) and never contains the
// URL, the body or the receiver's answer.
type DeliveryError struct {
	// StatusCode is the receiver's HTTP status, or 0 if there was none.
	StatusCode int
	// Code is the webhook_* error code of the receiver's
	// WWW-Authenticate: Signature challenge, if any.
	Code string
	// Permanent reports that retrying cannot succeed: give the delivery up.
	Permanent bool

	what string
	err  error
}

// Error implements error.
func (e *DeliveryError) Error() string {
	verdict := "will retry"
	if e.Permanent {
		verdict = "permanent"
	}
	return fmt.Sprintf("webhook delivery failed: %s (%s)", e.what, verdict)
}

// Unwrap returns the cause: for a network failure the error below the
// *url.Error (so the URL is not reachable through it), for a refused
// address an error matching ErrURLNotAllowed.
func (e *DeliveryError) Unwrap() error { return e.err }

// IsPermanent reports whether err is a DeliveryError that retrying cannot
// fix.
func IsPermanent(err error) bool {
	var de *DeliveryError
	return errors.As(err, &de) && de.Permanent
}

// maxAnswer bounds how much of the receiver's answer is read (and thrown
// away) so the connection can be reused.
const maxAnswer = 64 << 10

// Send makes one attempt to deliver d: it checks the URL with the guard,
// signs a fresh request over d.Body (new created, expires and nonce), posts
// it and classifies the answer. It returns nil when the receiver answered
// 2xx, and otherwise a *DeliveryError; one that is not Permanent may be
// retried later (see RetryPolicy) with the same Delivery. If ctx ends first
// the error also matches ctx's error.
func (s *Sender) Send(ctx context.Context, d Delivery) error {
	if len(d.Body) == 0 {
		return &DeliveryError{Permanent: true, what: "the delivery has no body"}
	}
	if err := s.urls.CheckURL(d.URL); err != nil {
		return &DeliveryError{Permanent: true, what: "the URL is not allowed", err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, nil)
	if err != nil {
		return &DeliveryError{Permanent: true, what: "the URL cannot be requested"}
	}
	req.Header.Set("Content-Type", "application/json")
	if s.signer != nil {
		if _, err := s.signer.Sign(req, d.Body); err != nil {
			return &DeliveryError{Permanent: true, what: "the request cannot be signed", err: err}
		}
	} else {
		req.Body = io.NopCloser(bytes.NewReader(d.Body))
		req.ContentLength = int64(len(d.Body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d.Body)), nil }
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return networkError(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	_ = resp.Body.Close()
	return classify(resp.StatusCode, resp.Header)
}

// classify turns the receiver's answer into nil (delivered) or a
// *DeliveryError, as AdCP prescribes:
//
//   - 2xx is delivered;
//   - 409 means the key is bound to another payload: never retry it;
//   - 401 with a WWW-Authenticate: Signature error="webhook_*" challenge is
//     a verification failure that every retry (same body, same key) would
//     repeat: permanent; a plain 401 is treated as a transient receiver
//     configuration problem and retried;
//   - 408, 425, 429 and every 5xx are transient;
//   - every other status (3xx, since redirects are never followed; other
//     4xx) is permanent.
func classify(status int, h http.Header) error {
	if status >= 200 && status < 300 {
		return nil
	}
	e := &DeliveryError{StatusCode: status, what: "receiver answered " + strconv.Itoa(status)}
	switch {
	case status == http.StatusUnauthorized:
		if code := signatureErrorCode(h); code != "" {
			e.Code = code
			e.what += " " + code
			e.Permanent = true
		}
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
	case status >= 500 && status < 600:
	default:
		e.Permanent = true
	}
	return e
}

// signatureErrorCode extracts the code of a WWW-Authenticate: Signature
// error="webhook_..." challenge, or "" if there is none. Only webhook codes
// are returned (they are a closed, safe vocabulary).
func signatureErrorCode(h http.Header) string {
	for _, v := range h.Values("Www-Authenticate") {
		scheme, params, _ := strings.Cut(strings.TrimSpace(v), " ")
		if !strings.EqualFold(scheme, "Signature") {
			continue
		}
		for p := range strings.SplitSeq(params, ",") {
			name, value, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "error") {
				continue
			}
			code := strings.Trim(strings.TrimSpace(value), `"`)
			if strings.HasPrefix(code, "webhook_") && len(code) <= 64 && tokenChars(code) {
				return code
			}
		}
	}
	return ""
}

// networkError classifies a failed request. The *url.Error (which prints
// the URL) is dropped; the message names only the kind of failure.
func networkError(err error) *DeliveryError {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	e := &DeliveryError{err: err}
	var (
		dnsErr  *net.DNSError
		netErr  net.Error
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invalid x509.CertificateInvalidError
		recErr  tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, ErrURLNotAllowed):
		e.what, e.Permanent = "the URL resolved to an address that is not allowed", true
	case errors.Is(err, context.Canceled):
		e.what = "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		e.what = "timed out"
	case errors.As(err, &dnsErr):
		e.what = "the host name did not resolve"
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &hostErr), errors.As(err, &invalid), errors.As(err, &recErr):
		e.what = "the TLS handshake failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.what = "the connection was refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		e.what = "the connection was closed"
	default:
		e.what = "the request failed"
	}
	return e
}
