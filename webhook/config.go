package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
)

// PushNotificationConfig is a task's webhook registration
// (core/push-notification-config.json), as a seller reads it from the task
// arguments.
type PushNotificationConfig struct {
	// URL is where the webhooks go. It is opaque to the seller: never parse
	// it for correlation, never log it.
	URL string `json:"url"`
	// OperationID is the buyer's correlation id, echoed in every payload.
	// AdCP 3.2 sellers reject a registration without it.
	OperationID string `json:"operation_id,omitempty"`
	// Token is the buyer's optional validation token, echoed in every
	// payload.
	Token string `json:"token,omitempty"`
	// Authentication is the deprecated legacy (Bearer or HMAC-SHA256)
	// block. Its presence selects the legacy scheme, which this package
	// does not implement: Validate rejects it.
	Authentication json.RawMessage `json:"authentication,omitempty"`
}

// ErrInvalidConfig is matched by every error of Validate and
// ReadPushNotificationConfig: the registration must be rejected with
// INVALID_REQUEST.
var ErrInvalidConfig = errors.New("webhook: invalid push_notification_config")

// ConfigError is an invalid push_notification_config. Field names the
// offending member ("push_notification_config.url", ...) and Reason says
// what is wrong; both are safe to return to the buyer and never contain the
// URL or the token. Errors from the URL guard also match ErrURLNotAllowed.
type ConfigError struct {
	Field  string
	Reason string
	err    error
}

// Error implements error.
func (e *ConfigError) Error() string { return e.Field + ": " + e.Reason }

// Is matches ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Unwrap returns the cause, if any.
func (e *ConfigError) Unwrap() error { return e.err }

func configError(field, reason string, cause error) *ConfigError {
	return &ConfigError{Field: "push_notification_config" + field, Reason: reason, err: cause}
}

// Validate checks the registration as a seller must before accepting the
// task: the URL passes the guard p (nil means the default, strict policy),
// operation_id is present and matches ^[A-Za-z0-9_.:-]{1,255}$, the token,
// if any, has 16 to 4096 characters, and no legacy authentication block is
// present. Errors are *ConfigError and match ErrInvalidConfig.
func (c PushNotificationConfig) Validate(p *URLPolicy) error {
	if c.URL == "" {
		return configError(".url", "is required", nil)
	}
	if err := p.CheckURL(c.URL); err != nil {
		var ue *URLError
		reason := "is not allowed"
		if errors.As(err, &ue) {
			reason = ue.Reason
		}
		return configError(".url", reason, err)
	}
	switch {
	case c.OperationID == "":
		return configError(".operation_id", "is required: every webhook payload must echo it", nil)
	case len(c.OperationID) > 255 || !tokenChars(c.OperationID):
		return configError(".operation_id", "must be 1 to 255 characters, each a letter, digit, '_', '.', ':' or '-'", nil)
	case c.Token != "" && (len(c.Token) < 16 || len(c.Token) > 4096):
		return configError(".token", "must have 16 to 4096 characters", nil)
	case len(c.Authentication) > 0 && !bytes.Equal(bytes.TrimSpace(c.Authentication), []byte("null")):
		return configError(".authentication", "legacy webhook authentication is not supported; omit it to receive RFC 9421 signed webhooks", nil)
	}
	return nil
}

// ReadPushNotificationConfig reads the push_notification_config member of a
// task's JSON arguments and validates it with Validate under the guard p
// (nil means the default, strict policy). It reports ok false, and no
// error, when the member is absent or null.
func ReadPushNotificationConfig(args []byte, p *URLPolicy) (cfg PushNotificationConfig, ok bool, err error) {
	var envelope struct {
		Config json.RawMessage `json:"push_notification_config"`
	}
	if err := json.Unmarshal(args, &envelope); err != nil {
		return cfg, false, &ConfigError{Field: "push_notification_config", Reason: "task arguments are not a JSON object", err: err}
	}
	raw := bytes.TrimSpace(envelope.Config)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return cfg, false, nil
	}
	if raw[0] != '{' {
		return cfg, false, configError("", "must be an object", nil)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return PushNotificationConfig{}, false, configError("", "has a member of the wrong type", err)
	}
	if err := cfg.Validate(p); err != nil {
		return PushNotificationConfig{}, false, err
	}
	return cfg, true, nil
}

// tokenChars reports whether s is non-empty and made of [A-Za-z0-9_.:-].
func tokenChars(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
