package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var keyPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{16,255}$`)

func testConfig(url string) PushNotificationConfig {
	return PushNotificationConfig{URL: url, OperationID: "op_456", Token: "buyer-token-0123456789"}
}

func testNotification() Notification {
	return Notification{
		TaskID: "task_456", TaskType: "create_media_buy", Status: StatusCompleted, Protocol: "media-buy",
		Message: "Media buy created", Context: json.RawMessage(`{"trace_id":"t-1"}`),
		Result: map[string]any{"media_buy_id": "mb_1", "packages": []any{}},
	}
}

func TestNewDelivery(t *testing.T) {
	before := time.Now().Add(-time.Second)
	d, err := NewDelivery(testConfig("https://buyer.example/hooks/route_abc"), testNotification())
	if err != nil {
		t.Fatal(err)
	}
	if !keyPattern.MatchString(d.IdempotencyKey) || d.IdempotencyKey == "task_456" {
		t.Errorf("idempotency_key %q: want a fresh key matching the AdCP pattern", d.IdempotencyKey)
	}
	ev, err := ParseEvent(d.Body)
	if err != nil {
		t.Fatalf("ParseEvent(own body): %v", err)
	}
	if ev.IdempotencyKey != d.IdempotencyKey || ev.OperationID != "op_456" || ev.Token != "buyer-token-0123456789" ||
		ev.TaskID != "task_456" || ev.TaskType != "create_media_buy" || ev.Status != StatusCompleted ||
		string(ev.Context) != `{"trace_id":"t-1"}` || !strings.Contains(string(ev.Result), `"media_buy_id":"mb_1"`) {
		t.Errorf("event = %+v", ev)
	}
	if ev.Timestamp.Before(before) || ev.Timestamp.After(time.Now()) {
		t.Errorf("timestamp %v is not now", ev.Timestamp)
	}
	// Every event gets its own key, even for the same notification.
	again, err := NewDelivery(testConfig("https://buyer.example/hooks/route_abc"), testNotification())
	if err != nil {
		t.Fatal(err)
	}
	if again.IdempotencyKey == d.IdempotencyKey {
		t.Error("two events share an idempotency_key")
	}
	// The body is the serialisation of the event, made once: Delivery
	// carries it as it is.
	if !bytes.Contains(d.Body, []byte(`"idempotency_key":"`+d.IdempotencyKey+`"`)) {
		t.Errorf("body %s does not carry its key", d.Body)
	}
}

func TestNewDeliveryRejects(t *testing.T) {
	cfg := testConfig("https://buyer.example/h")
	for name, tc := range map[string]struct {
		cfg PushNotificationConfig
		n   Notification
	}{
		"no url":            {PushNotificationConfig{OperationID: "op"}, testNotification()},
		"no operation_id":   {PushNotificationConfig{URL: "https://buyer.example/h"}, testNotification()},
		"no task id":        {cfg, Notification{TaskType: "create_media_buy", Status: StatusWorking}},
		"no task type":      {cfg, Notification{TaskID: "t", Status: StatusWorking}},
		"bad status":        {cfg, Notification{TaskID: "t", TaskType: "x", Status: "active"}},
		"duplicate keys":    {cfg, Notification{TaskID: "t", TaskType: "x", Status: StatusCompleted, Result: json.RawMessage(`{"a":1,"a":2}`)}},
		"nested duplicates": {cfg, Notification{TaskID: "t", TaskType: "x", Status: StatusCompleted, Context: json.RawMessage(`{"x":[{"b":1,"b":1}]}`)}},
		"unencodable":       {cfg, Notification{TaskID: "t", TaskType: "x", Status: StatusCompleted, Result: func() {}}},
	} {
		if _, err := NewDelivery(tc.cfg, tc.n); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent", name, err)
		}
	}
}

func TestStatus(t *testing.T) {
	for _, s := range []Status{StatusSubmitted, StatusWorking, StatusInputRequired, StatusAuthRequired, StatusCompleted, StatusFailed, StatusCanceled, StatusRejected, StatusUnknown} {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	if Status("active").Valid() || StatusWorking.Terminal() || !StatusRejected.Terminal() {
		t.Error("Valid/Terminal wrong")
	}
}

// specDir locates the AdCP spec drop: $ADCP_SPEC_DIR, else the copy shared
// next to the repository. A missing spec is a failure, never a skip.
func specDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("ADCP_SPEC_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "spec", "adcp-3.2.0-beta.5")
	}
	if fi, err := os.Stat(filepath.Join(dir, "test-vectors")); err != nil || !fi.IsDir() {
		t.Fatalf("AdCP spec test vectors not found under %q (set ADCP_SPEC_DIR): %v", dir, err)
	}
	return dir
}

// The receiver envelope vectors: positives parse, negatives are rejected
// with the vector's reason.
func TestParseEventVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(specDir(t), "test-vectors", "webhook-receiver-envelope.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Positive []struct {
			ID      string          `json:"id"`
			Payload json.RawMessage `json:"payload"`
		} `json:"positive"`
		Negative []struct {
			ID            string          `json:"id"`
			ExpectedError string          `json:"expected_error"`
			Payload       json.RawMessage `json:"payload"`
		} `json:"negative"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Positive) == 0 || len(doc.Negative) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range doc.Positive {
		if _, err := ParseEvent(v.Payload); err != nil {
			t.Errorf("%s: %v", v.ID, err)
		}
	}
	for _, v := range doc.Negative {
		_, err := ParseEvent(v.Payload)
		var ee *EventError
		if !errors.As(err, &ee) || ee.Reason != v.ExpectedError {
			t.Errorf("%s: err = %v, want reason %s", v.ID, err, v.ExpectedError)
		}
	}
}

func TestParseEventRejects(t *testing.T) {
	valid := `"operation_id":"op","task_id":"t","task_type":"x","status":"working","timestamp":"2026-01-01T00:00:00Z"`
	for body, reason := range map[string]string{
		`[]`:   "not_a_json_object",
		`null`: "not_a_json_object",
		`{` + valid + `,"idempotency_key":"short"}`:                 "invalid_idempotency_key",
		`{` + valid + `,"idempotency_key":"whk_0123456789abcdef/"}`: "invalid_idempotency_key",
		`{` + valid + `,"idempotency_key":7}`:                       "malformed_envelope",
		`{"idempotency_key":"whk_0123456789abcdef","operation_id":"op","task_id":"t","task_type":"x","status":"working","timestamp":"yesterday"}`:          "malformed_envelope",
		`{"idempotency_key":"whk_0123456789abcdef","operation_id":"","task_id":"t","task_type":"x","status":"working","timestamp":"2026-01-01T00:00:00Z"}`: "missing_envelope_fields",
	} {
		_, err := ParseEvent([]byte(body))
		var ee *EventError
		if !errors.As(err, &ee) || ee.Reason != reason || !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: err = %v, want reason %s", body, err, reason)
		}
	}
}

func TestReadPushNotificationConfig(t *testing.T) {
	strict := &URLPolicy{}
	cfg, ok, err := ReadPushNotificationConfig([]byte(`{"budget":1,"push_notification_config":{"url":"https://buyer.example/h?route=abc","operation_id":"op_1","token":"0123456789abcdef"}}`), strict)
	if err != nil || !ok || cfg.URL != "https://buyer.example/h?route=abc" || cfg.OperationID != "op_1" || cfg.Token != "0123456789abcdef" {
		t.Fatalf("= %+v, %v, %v", cfg, ok, err)
	}
	for _, args := range []string{`{}`, `{"push_notification_config":null}`} {
		if _, ok, err := ReadPushNotificationConfig([]byte(args), strict); ok || err != nil {
			t.Errorf("%s: ok=%v err=%v, want absent", args, ok, err)
		}
	}
	const secret = "s3cr3t-route-token"
	for args, field := range map[string]string{
		`[1]`: "push_notification_config",
		`{"push_notification_config":"https://x.example"}`:                                                   "push_notification_config",
		`{"push_notification_config":{"url":7}}`:                                                             "push_notification_config",
		`{"push_notification_config":{"operation_id":"op"}}`:                                                 "push_notification_config.url",
		`{"push_notification_config":{"url":"http://buyer.example/` + secret + `","operation_id":"op"}}`:     "push_notification_config.url",
		`{"push_notification_config":{"url":"https://10.1.2.3/` + secret + `","operation_id":"op"}}`:         "push_notification_config.url",
		`{"push_notification_config":{"url":"https://buyer.example/h"}}`:                                     "push_notification_config.operation_id",
		`{"push_notification_config":{"url":"https://buyer.example/h","operation_id":"op/1"}}`:               "push_notification_config.operation_id",
		`{"push_notification_config":{"url":"https://buyer.example/h","operation_id":"op","token":"short"}}`: "push_notification_config.token",
		`{"push_notification_config":{"url":"https://buyer.example/h","operation_id":"op","authentication":{"schemes":["HMAC-SHA256"],"credentials":"` + strings.Repeat("k", 32) + `"}}}`: "push_notification_config.authentication",
	} {
		_, _, err := ReadPushNotificationConfig([]byte(args), strict)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != field || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want a ConfigError on %s", args, err, field)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "10.1.2.3") {
			t.Errorf("%s: error %q echoes the URL", args, err)
		}
	}
	// A URL refused by the guard also matches ErrURLNotAllowed.
	_, _, err = ReadPushNotificationConfig([]byte(`{"push_notification_config":{"url":"https://127.0.0.1/","operation_id":"op"}}`), nil)
	if !errors.Is(err, ErrURLNotAllowed) {
		t.Errorf("loopback URL: err = %v, want ErrURLNotAllowed", err)
	}
}
