package idem

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestWire(t *testing.T) {
	inflight := newError(ErrInFlight, "")
	inflight.RetryAfter = 1500 * time.Millisecond
	limited := newError(ErrRateLimited, "slow down")
	limited.RetryAfter = 3 * time.Hour
	tests := []struct {
		err  error
		want string
	}{
		{ValidateKey(""), `{"code":"INVALID_REQUEST","message":"idempotency_key is required on mutating requests","recovery":"correctable","field":"idempotency_key"}`},
		{newError(ErrConflict, "used"), `{"code":"IDEMPOTENCY_CONFLICT","message":"used","recovery":"correctable"}`},
		{fmt.Errorf("wrapped: %w", inflight), `{"code":"IDEMPOTENCY_IN_FLIGHT","message":"a request with this idempotency_key is still in flight","recovery":"transient","retry_after":2}`},
		{limited, `{"code":"RATE_LIMITED","message":"slow down","recovery":"transient","retry_after":3600}`},
		{newError(ErrExpired, "late"), `{"code":"IDEMPOTENCY_EXPIRED","message":"late","recovery":"correctable"}`},
		{newError(ErrMissingPrincipal, "who"), `{"code":"AUTH_REQUIRED","message":"who","recovery":"correctable"}`},
		{storageError("claim", errors.New("dial tcp: secret-host:5432")), `{"code":"SERVICE_UNAVAILABLE","message":"idempotency storage is unavailable","recovery":"transient"}`},
		{errors.New("pq: password authentication failed"), `{"code":"SERVICE_UNAVAILABLE","message":"internal error","recovery":"transient"}`},
	}
	for _, tt := range tests {
		got, _ := json.Marshal(Wire(tt.err))
		if string(got) != tt.want {
			t.Errorf("Wire(%v)\n got %s\nwant %s", tt.err, got, tt.want)
		}
	}
}

func TestErrorMatchesItsSentinelOnly(t *testing.T) {
	cause := errors.New("connection reset")
	err := fmt.Errorf("outer: %w", storageError("commit", cause))
	if !errors.Is(err, ErrStorage) || !errors.Is(err, cause) || errors.Is(err, ErrConflict) {
		t.Fatalf("errors.Is on %v: storage=%v cause=%v conflict=%v", err, errors.Is(err, ErrStorage), errors.Is(err, cause), errors.Is(err, ErrConflict))
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeServiceUnavailable || e.Recovery != RecoveryTransient {
		t.Fatalf("errors.As: %+v", e)
	}
	for kind := range adcpClass {
		if got := newError(kind, ""); !errors.Is(got, kind) || got.Message != kind.Error() {
			t.Errorf("newError(%v) = %+v", kind, got)
		}
	}
}

func TestPrepareRejectsUnusablePrincipals(t *testing.T) {
	for _, p := range []string{"", "a\x00b", "\xff\xfe", string(make([]byte, MaxPrincipalLen+1))} {
		_, err := prepare(Request{Principal: p, Key: "key-0000000000000001", Operation: "op", Payload: []byte(`{}`)}, 1<<20)
		if !errors.Is(err, ErrMissingPrincipal) {
			t.Errorf("principal %q: %v, want ErrMissingPrincipal", p, err)
		}
	}
	if _, err := prepare(Request{Principal: "agency/acme", Key: "key-0000000000000001", Operation: "op", Payload: []byte(`{}`)}, 1<<20); err != nil {
		t.Fatal(err)
	}
}
