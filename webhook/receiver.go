package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/idem"
)

// DefaultMaxBodyBytes is the receiver's default body limit: the 1 MB the
// spec recommends.
const DefaultMaxBodyBytes = 1_000_000

// receiverOperation is the idem operation every delivery is stored under:
// the key space is (sender, idempotency_key), whatever the task.
const receiverOperation = "adcp.webhook"

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// Verifier runs the RFC 9421 webhook verifier checklist. Required; its
	// Profile must be httpsig.ProfileWebhook, and its NonceStore must be
	// shared by every endpoint the sender can reach.
	Verifier *httpsig.Verifier

	// Guard stores each delivery's answer under (sender, idempotency_key).
	// Required. Its backend must be shared by every receiver instance and
	// durable (Postgres, Redis); its Config.TTL must cover the sender's
	// delivery_retry_horizon_seconds (the spec requires at least 24 hours).
	// With Config.Duplicates set to idem.RejectInFlight a duplicate of a
	// delivery still being processed gets 503 at once; with the default it
	// waits up to Config.WaitLimit for the answer first. Its
	// Config.Limiter bounds how fast one sender adds keys: past it the
	// sender gets 429 with Retry-After, as the spec asks receivers to bound
	// their dedupe store per sender; size it for the sender's volume.
	Guard *idem.Guard

	// SenderID maps a verified signature to the sender's identity, the
	// scope of its idempotency keys: typically the agents[] url of the
	// brand.json whose JWKS holds the key. It must return an error
	// matching an httpsig sentinel (httpsig.ErrKeyUnknown, ...) to reject
	// the signer with that code, or another error for an operational
	// failure (answered 503). Defaults to the verified keyid.
	SenderID func(r *http.Request, v *httpsig.Verified) (string, error)

	// MaxBodyBytes bounds the body; larger ones get 413 before any
	// cryptographic work. It must stay below the Guard's
	// Config.MaxPayloadBytes. Defaults to DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// Receiver is the buyer's webhook endpoint: an http.Handler that verifies,
// deduplicates and then calls the wrapped handler at most once per
// delivery. It is safe for concurrent use.
type Receiver struct {
	next     http.Handler
	verifier *httpsig.Verifier
	guard    *idem.Guard
	senderID func(*http.Request, *httpsig.Verified) (string, error)
	maxBody  int64
}

// NewReceiver returns a Receiver in front of next.
//
// next sees only verified, well-formed, first deliveries: the request's
// body is the raw signed bytes, and IncomingFromContext gives the sender
// and the parsed Event. next must check Event.Token itself if the
// registration carried one. Its answer is stored when it is 2xx and replayed
// to duplicates; a non-2xx answer is passed on but not stored, so the
// sender's retry runs next again. Answers are buffered: next should answer
// briefly, after its work is durable.
func NewReceiver(next http.Handler, cfg *ReceiverConfig) (*Receiver, error) {
	if cfg == nil || cfg.Verifier == nil || cfg.Guard == nil {
		return nil, errors.New("webhook: ReceiverConfig needs a Verifier and a Guard")
	}
	if cfg.Verifier.Profile != httpsig.ProfileWebhook {
		return nil, errors.New("webhook: ReceiverConfig.Verifier must use httpsig.ProfileWebhook")
	}
	if next == nil {
		return nil, errors.New("webhook: NewReceiver needs a handler")
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, errors.New("webhook: ReceiverConfig.MaxBodyBytes must not be negative")
	}
	return &Receiver{
		next:     next,
		verifier: cfg.Verifier,
		guard:    cfg.Guard,
		senderID: cfg.SenderID,
		maxBody:  cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes),
	}, nil
}

// Incoming describes a verified delivery to the wrapped handler.
type Incoming struct {
	// Sender is the authenticated sender identity (the dedupe scope).
	Sender string
	// Event is the parsed payload.
	Event *Event
	// Signature is the verified signature.
	Signature *httpsig.Verified
}

type incomingKey struct{}

// IncomingFromContext returns the delivery a Receiver is passing to its
// handler.
func IncomingFromContext(ctx context.Context) (*Incoming, bool) {
	in, ok := ctx.Value(incomingKey{}).(*Incoming)
	return in, ok
}

// storedAnswer is the wrapped handler's answer as the Guard stores it.
type storedAnswer struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type,omitempty"`
	Body        []byte `json:"body,omitempty"`
}

// handlerFailed carries a non-2xx answer out of idem.Do, which then
// releases the key without storing it.
type handlerFailed struct{ answer storedAnswer }

func (handlerFailed) Error() string { return "webhook: handler answered non-2xx" }

// ServeHTTP implements http.Handler.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, "method_not_allowed")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		reply(w, http.StatusUnsupportedMediaType, "content_type_not_json")
		return
	}
	if r.ContentLength > rc.maxBody {
		reply(w, http.StatusRequestEntityTooLarge, "payload_too_large")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, rc.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			reply(w, http.StatusRequestEntityTooLarge, "payload_too_large")
			return
		}
		reply(w, http.StatusBadRequest, "body_unreadable")
		return
	}

	verified, err := rc.verifier.Verify(r.Context(), r, body)
	if err != nil {
		rc.rejectSignature(w, err)
		return
	}
	sender := verified.KeyID
	if rc.senderID != nil {
		if sender, err = rc.senderID(r, verified); err != nil || sender == "" {
			rc.rejectSignature(w, cmp.Or(err, error(httpsig.ErrKeyUnknown)))
			return
		}
	}
	ev, err := ParseEvent(body)
	if err != nil {
		var ee *EventError
		errors.As(err, &ee)
		reply(w, http.StatusBadRequest, ee.Reason)
		return
	}

	// The payload the key is bound to is the whole body. idem compares
	// requests without the top-level members AdCP excludes from request
	// equivalence (context among them); nesting the body one level down
	// keeps every member of the event in the comparison.
	payload := make([]byte, 0, len(body)+16)
	payload = append(append(append(payload, `{"delivery":`...), body...), '}')
	in := &Incoming{Sender: sender, Event: ev, Signature: verified}
	res, err := idem.Do(r.Context(), rc.guard, idem.Request{
		Principal: sender, Key: ev.IdempotencyKey, Operation: receiverOperation, Payload: payload,
	}, func(ctx context.Context) (storedAnswer, error) {
		rec := &recorder{header: http.Header{}}
		req := r.WithContext(context.WithValue(ctx, incomingKey{}, in))
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		rc.next.ServeHTTP(rec, req)
		a := storedAnswer{Status: cmp.Or(rec.status, http.StatusOK), ContentType: rec.header.Get("Content-Type"), Body: rec.body.Bytes()}
		if a.Status < 200 || a.Status > 299 {
			return a, handlerFailed{a}
		}
		return a, nil
	})
	var failed handlerFailed
	switch {
	case err == nil:
		writeAnswer(w, res.Value)
	case errors.As(err, &failed):
		writeAnswer(w, failed.answer)
	default:
		rc.rejectDedupe(w, err)
	}
}

// rejectSignature answers a verification failure: 401 with the webhook
// error code, or 503 for an operational failure (a nonce store outage).
func (rc *Receiver) rejectSignature(w http.ResponseWriter, err error) {
	code := httpsig.ProfileWebhook.Code(err)
	if errors.Is(err, httpsig.ErrUnsigned) {
		// An unsigned delivery where the registration selected RFC 9421
		// signing (it carried no legacy authentication block).
		code = "webhook_mode_mismatch"
	}
	if code == "" {
		w.Header().Set("Retry-After", "1")
		reply(w, http.StatusServiceUnavailable, "verification_unavailable")
		return
	}
	w.Header().Set("WWW-Authenticate", `Signature error="`+code+`"`)
	reply(w, http.StatusUnauthorized, code)
}

// rejectDedupe answers an idem outcome other than a stored answer.
func (rc *Receiver) rejectDedupe(w http.ResponseWriter, err error) {
	var ie *idem.Error
	retryAfter := time.Second
	if errors.As(err, &ie) && ie.RetryAfter > 0 {
		retryAfter = ie.RetryAfter
	}
	switch {
	case errors.Is(err, idem.ErrConflict):
		reply(w, http.StatusConflict, "idempotency_key_conflict")
	case errors.Is(err, idem.ErrExpired):
		// The key was processed, and is now past the replay window: the
		// sender is retrying past its horizon. Acknowledge without
		// processing again.
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"already_processed"}`)
	case errors.Is(err, idem.ErrRateLimited):
		setRetryAfter(w, retryAfter)
		reply(w, http.StatusTooManyRequests, "rate_limited")
	case errors.Is(err, idem.ErrInvalidKey), errors.Is(err, idem.ErrMissingKey), errors.Is(err, idem.ErrInvalidPayload):
		reply(w, http.StatusBadRequest, "invalid_envelope")
	case errors.Is(err, idem.ErrInFlight):
		setRetryAfter(w, retryAfter)
		reply(w, http.StatusServiceUnavailable, "in_flight")
	default:
		// Storage failures, cancellation, a lost lease: nothing was
		// acknowledged, the sender retries.
		setRetryAfter(w, retryAfter)
		reply(w, http.StatusServiceUnavailable, "unavailable")
	}
}

func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	secs := max(int((d+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
}

func writeAnswer(w http.ResponseWriter, a storedAnswer) {
	if a.ContentType != "" {
		w.Header().Set("Content-Type", a.ContentType)
	}
	w.WriteHeader(a.Status)
	_, _ = w.Write(a.Body)
}

// reply writes a small JSON answer carrying a stable reason code.
func reply(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": reason})
}

// recorder buffers the wrapped handler's answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}
