package seller

import (
	"cmp"
	"context"
	"embed"
	"io/fs"
	"time"

	"github.com/adcp-go/idempotency/internal/seller/sellerdb"
)

//go:embed schema/*.sql
var schemaFiles embed.FS

var schemaFS, _ = fs.Sub(schemaFiles, "schema")

// dispatch delivers the Postgres outbox: events whose transaction has
// committed, at least once, with retries and backoff. It leases rows so that
// several seller processes on one database never send one event at once; a
// crash between a delivery and its bookkeeping sends the event again, with
// the same idempotency_key, which receivers drop as a duplicate.
func (s *Seller) dispatch(ctx context.Context) {
	interval := cmp.Or(s.cfg.DispatchInterval, time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for s.dispatchBatch(ctx) {
		}
		select {
		case <-ctx.Done():
			return
		case <-s.nudge:
		case <-t.C:
		}
	}
}

// dispatchBatch sends one batch of due events and reports whether there may
// be more.
func (s *Seller) dispatchBatch(ctx context.Context) bool {
	const batch = 16
	rows, err := s.q.OutboxLease(ctx, s.cfg.DB, sellerdb.OutboxLeaseParams{LeaseMs: 60_000, MaxRows: batch})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("outbox: leasing events failed", "error", err)
		}
		return false
	}
	for _, r := range rows {
		err := s.poster.post(ctx, event{url: r.URL, body: r.Body})
		if err == nil {
			err = s.q.OutboxDelivered(ctx, s.cfg.DB, r.ID)
			if err != nil {
				s.log.Warn("outbox: marking an event delivered failed; it will be sent again", "id", r.ID, "error", err)
			}
			continue
		}
		delay := backoff(int(r.Attempts))
		if r.Attempts >= maxAttempts {
			delay = 100 * 365 * 24 * time.Hour // parked; visible in the table for an operator
		}
		s.log.Warn("outbox: webhook delivery failed; will retry", "id", r.ID, "attempt", r.Attempts, "retry_in", delay, "error", err)
		if err := s.q.OutboxRetryLater(ctx, s.cfg.DB, sellerdb.OutboxRetryLaterParams{ID: r.ID, LastError: err.Error(), DelayMs: delay.Milliseconds()}); err != nil {
			s.log.Warn("outbox: recording a failed attempt failed", "id", r.ID, "error", err)
		}
	}
	return len(rows) == batch
}

// MediaBuyCount reports how many media buys principal has (for tests and
// operators).
func (s *Seller) MediaBuyCount(ctx context.Context, principal string) (int, error) {
	if s.store == nil {
		return s.buys.count(principal), nil
	}
	n, err := s.q.MediaBuyCount(ctx, s.cfg.DB, principal)
	return int(n), err
}
