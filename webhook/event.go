package webhook

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/adcp-go/idempotency/idem"
)

// Status is an AdCP task status (enums/task-status.json).
type Status string

// The AdCP task statuses.
const (
	StatusSubmitted     Status = "submitted"
	StatusWorking       Status = "working"
	StatusInputRequired Status = "input-required"
	StatusAuthRequired  Status = "auth-required"
	StatusCompleted     Status = "completed"
	StatusFailed        Status = "failed"
	StatusCanceled      Status = "canceled"
	StatusRejected      Status = "rejected"
	StatusUnknown       Status = "unknown"
)

// Valid reports whether s is one of the AdCP task statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusSubmitted, StatusWorking, StatusInputRequired, StatusAuthRequired,
		StatusCompleted, StatusFailed, StatusCanceled, StatusRejected, StatusUnknown:
		return true
	}
	return false
}

// Terminal reports whether s settles the task: completed, failed, canceled
// or rejected.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCanceled, StatusRejected:
		return true
	}
	return false
}

// Event is the AdCP webhook payload of a push_notification_config
// registration (core/mcp-webhook-payload.json), the body of every attempt to
// deliver it. Receivers decode it with ParseEvent.
type Event struct {
	// IdempotencyKey is the delivery key receivers dedupe by: random,
	// generated once per event, the same on every retry.
	IdempotencyKey string `json:"idempotency_key"`
	// NotificationID identifies one logical notification across
	// re-emissions, for event types that define it.
	NotificationID string `json:"notification_id,omitempty"`
	// OperationID is echoed verbatim from push_notification_config.
	OperationID string `json:"operation_id"`
	// TaskID is the seller's AdCP task id.
	TaskID string `json:"task_id"`
	// TaskType is the AdCP operation, e.g. "create_media_buy".
	TaskType string `json:"task_type"`
	// Protocol is the AdCP protocol of the task, e.g. "media-buy".
	Protocol string `json:"protocol,omitempty"`
	// Status is the task status this event reports.
	Status Status `json:"status"`
	// Timestamp is when the event was generated; retries repeat it.
	Timestamp time.Time `json:"timestamp"`
	// Message is a human-readable summary.
	Message string `json:"message,omitempty"`
	// ContextID is the session correlation id, if any.
	ContextID string `json:"context_id,omitempty"`
	// Context is the originating request's context object, echoed verbatim.
	Context json.RawMessage `json:"context,omitempty"`
	// Token is echoed verbatim from push_notification_config.token.
	Token string `json:"token,omitempty"`
	// Result is the task-specific data: the full task response for
	// completed and failed (a failure's errors live here), progress for
	// working, the reason for input-required.
	Result json.RawMessage `json:"result,omitempty"`
}

// Notification is what a task reports in one webhook: everything in the
// Event except what NewDelivery supplies (the delivery key, the echoed
// operation_id and token, the timestamp).
type Notification struct {
	// TaskID and TaskType are required.
	TaskID   string
	TaskType string
	// Status is required.
	Status Status
	// Message, Protocol, NotificationID and ContextID are optional.
	Message        string
	Protocol       string
	NotificationID string
	ContextID      string
	// Context is the originating request's top-level context object,
	// which AdCP requires every webhook of the operation to echo.
	Context json.RawMessage
	// Result is the task-specific data, encoded with encoding/json
	// (a json.RawMessage is used as it is). Nil omits it.
	Result any
}

// Delivery is one event ready to send: where, and the exact bytes.
type Delivery struct {
	// URL is the receiver's push_notification_config.url. It may carry the
	// buyer's routing token: it never appears in an error of this package.
	URL string `json:"url"`
	// IdempotencyKey is the event's idempotency_key (also inside Body).
	IdempotencyKey string `json:"idempotency_key"`
	// Body is the serialised Event, sent unchanged on every attempt.
	Body []byte `json:"body"`
}

// ErrInvalidEvent is matched by the errors of NewDelivery and ParseEvent.
var ErrInvalidEvent = errors.New("webhook: invalid event")

// EventError is an invalid event or envelope. Reason is a stable
// snake_case code (the webhook-receiver-envelope test vectors' names where
// they have one); the error never carries payload values.
type EventError struct {
	Reason string
	Field  string
	err    error
}

// Error implements error.
func (e *EventError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("webhook: invalid event: %s (%s)", e.Reason, e.Field)
	}
	return "webhook: invalid event: " + e.Reason
}

// Is matches ErrInvalidEvent.
func (e *EventError) Is(target error) bool { return target == ErrInvalidEvent }

// Unwrap returns the cause, if any.
func (e *EventError) Unwrap() error { return e.err }

func eventError(reason, field string, cause error) *EventError {
	return &EventError{Reason: reason, Field: field, err: cause}
}

// NewDelivery builds the webhook event for n under the registration cfg and
// serialises it once. The event gets a fresh random idempotency_key, the
// registration's operation_id and token, and the current time; retries must
// send the returned Body unchanged. cfg must have passed Validate (NewDelivery
// checks only that it names a URL and an operation_id). Errors match
// ErrInvalidEvent.
func NewDelivery(cfg PushNotificationConfig, n Notification) (Delivery, error) {
	switch {
	case cfg.URL == "":
		return Delivery{}, eventError("missing_url", "push_notification_config.url", nil)
	case cfg.OperationID == "":
		return Delivery{}, eventError("missing_operation_id", "push_notification_config.operation_id", nil)
	case n.TaskID == "":
		return Delivery{}, eventError("missing_task_id", "task_id", nil)
	case n.TaskType == "":
		return Delivery{}, eventError("missing_task_type", "task_type", nil)
	case !n.Status.Valid():
		return Delivery{}, eventError("invalid_envelope_status", "status", nil)
	}
	e := Event{
		IdempotencyKey: NewEventKey(),
		NotificationID: n.NotificationID,
		OperationID:    cfg.OperationID,
		TaskID:         n.TaskID,
		TaskType:       n.TaskType,
		Protocol:       n.Protocol,
		Status:         n.Status,
		Timestamp:      time.Now().UTC().Truncate(time.Millisecond),
		Message:        n.Message,
		ContextID:      n.ContextID,
		Context:        nullToNil(n.Context),
		Token:          cfg.Token,
	}
	if n.Result != nil {
		raw, err := json.Marshal(n.Result)
		if err != nil {
			return Delivery{}, eventError("result_not_encodable", "result", err)
		}
		e.Result = nullToNil(raw)
	}
	body, err := json.Marshal(e)
	if err != nil {
		return Delivery{}, eventError("not_encodable", "", err)
	}
	// AdCP forbids signing a body with duplicate object keys (a caller's
	// raw context or result could carry them) and binds the key to the
	// body's RFC 8785 form, so the body must canonicalise.
	if _, err := idem.CanonicalJSONSHA256(body); err != nil {
		return Delivery{}, eventError("duplicate_key_input", "", err)
	}
	return Delivery{URL: cfg.URL, IdempotencyKey: e.IdempotencyKey, Body: body}, nil
}

// NewEventKey returns a fresh webhook idempotency_key: "whk_" and 128
// random bits in unpadded Base64URL, matching ^[A-Za-z0-9_.:-]{16,255}$.
// NewDelivery calls it once per event.
func NewEventKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "whk_" + base64.RawURLEncoding.EncodeToString(b[:])
}

func nullToNil(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	return raw
}

// ParseEvent decodes a webhook body and checks its envelope: the required
// members idempotency_key (well-formed), operation_id, task_id, task_type,
// status (a task status) and timestamp. Errors match ErrInvalidEvent and
// carry the reason the webhook-receiver-envelope vectors name
// (missing_envelope_fields, missing_idempotency_key,
// invalid_envelope_status, ...). It does not detect duplicate object keys:
// the signature verifier rejects those first.
func ParseEvent(body []byte) (*Event, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, eventError("not_a_json_object", "", err)
	}
	for _, f := range []string{"operation_id", "task_id", "task_type", "status", "timestamp"} {
		if _, ok := raw[f]; !ok {
			return nil, eventError("missing_envelope_fields", f, nil)
		}
	}
	if _, ok := raw["idempotency_key"]; !ok {
		return nil, eventError("missing_idempotency_key", "idempotency_key", nil)
	}
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		var te *json.UnmarshalTypeError
		field := ""
		if errors.As(err, &te) {
			field = te.Field
		}
		return nil, eventError("malformed_envelope", field, err)
	}
	switch {
	case idem.ValidateKey(e.IdempotencyKey) != nil:
		return nil, eventError("invalid_idempotency_key", "idempotency_key", nil)
	case e.OperationID == "" || e.TaskID == "" || e.TaskType == "":
		return nil, eventError("missing_envelope_fields", "", nil)
	case !e.Status.Valid():
		return nil, eventError("invalid_envelope_status", "status", nil)
	}
	return &e, nil
}
