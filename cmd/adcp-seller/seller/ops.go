package seller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/adcp-go/idempotency/idem"
)

// ErrNotReady is what [Seller.Ready] returns, wrapped with the reason, when
// the seller should not get traffic.
var ErrNotReady = errors.New("not ready")

// readyTimeout bounds the database round trip of a readiness check.
const readyTimeout = 2 * time.Second

// The lifecycle states of a Seller, for readiness.
const (
	stateNew     int32 = iota // New returned; Start not called yet
	stateRunning              // Start called
	stateClosed               // Close called
)

// opsState is the operational state of a Seller.
type opsState struct {
	state   atomic.Int32
	unready atomic.Bool // the last readiness check failed (logged once)
}

// Ready reports whether the seller should get traffic: nil once Start has
// run and until Close, and in Postgres mode only while a database round
// trip succeeds within two seconds (New has applied the migrations before
// it returned). Otherwise it returns an error matching [ErrNotReady] whose
// message says why, without secrets ("not ready: starting", "not ready:
// database: no answer within 2s", ...).
func (s *Seller) Ready(ctx context.Context) error {
	switch s.ops.state.Load() {
	case stateNew:
		return fmt.Errorf("%w: starting", ErrNotReady)
	case stateClosed:
		return fmt.Errorf("%w: stopping", ErrNotReady)
	}
	if s.cfg.DB == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := s.cfg.DB.Ping(ctx)
	if err == nil {
		if s.ops.unready.Swap(false) {
			s.log.InfoContext(ctx, "readiness: the database answers again")
		}
		return nil
	}
	reason := databaseTrouble(ctx, err)
	if !s.ops.unready.Swap(true) {
		// pgx's errors name the host, user and database, never the password.
		s.log.WarnContext(ctx, "readiness: not ready", "reason", reason, "error", err)
	}
	return fmt.Errorf("%w: %s", ErrNotReady, reason)
}

// databaseTrouble says what went wrong with a round trip, in words fit for
// an unauthenticated readiness probe: no host, user or server message.
func databaseTrouble(ctx context.Context, err error) string {
	var pgErr *pgconn.PgError
	var connectErr *pgconn.ConnectError
	switch {
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("database: no answer within %v", readyTimeout)
	case errors.As(err, &pgErr):
		return "database: error, SQLSTATE " + pgErr.Code
	case errors.As(err, &connectErr):
		return "database: cannot connect"
	default:
		return "database: round trip failed"
	}
}

// addProbes adds /healthz and /readyz to mux.
func (s *Seller) addProbes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		probeAnswer(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Ready(r.Context()); err != nil {
			probeAnswer(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		probeAnswer(w, http.StatusOK, "ready")
	})
}

func probeAnswer(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body + "\n"))
}

// instrument returns the idempotency configuration with the seller's
// observers added to the caller's (the access log's outcome, and
// Config.Telemetry's metrics and spans), and records the pool's statistics
// when there is Telemetry. The caller's Config is left as it is.
func (s *Seller) instrument(cfg Config) (*idem.Config, error) {
	c := idem.Config{}
	if cfg.Idempotency != nil {
		c = *cfg.Idempotency
	}
	var obs observers
	if c.Observer != nil {
		obs = append(obs, c.Observer)
	}
	if t := cfg.Telemetry; t != nil {
		obs = append(obs, t.observer)
		if cfg.DB != nil {
			if err := t.recordPool(cfg.DB); err != nil {
				return nil, fmt.Errorf("seller: pool metrics: %w", err)
			}
		}
	}
	c.Observer = append(obs, noteOutcome)
	return &c, nil
}

// observers is an idem.Observer that calls each of its own in turn.
type observers []idem.Observer

func (o observers) Begin(ctx context.Context, operation string) context.Context {
	for _, x := range o {
		ctx = x.Begin(ctx, operation)
	}
	return ctx
}

func (o observers) End(ctx context.Context, ob idem.Observation) {
	for _, x := range o {
		x.End(ctx, ob)
	}
}

func (o observers) Swept(ctx context.Context, deleted int) {
	for _, x := range o {
		x.Swept(ctx, deleted)
	}
}
