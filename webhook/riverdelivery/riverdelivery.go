// Package riverdelivery delivers AdCP webhooks through River, the Postgres
// job queue: the delivery is a job inserted in the caller's transaction, so
// the business write, the stored idempotent answer and the webhook commit
// together or not at all, and River's workers deliver it at least once, on
// any replica, after any crash.
//
// # Setup
//
// Migrate creates River's tables (run it with package migrations' Up at
// start-up). A webhook.Sender holds the signing key and the SSRF guard; a
// Worker wraps it, and is registered with the River client that works the
// queue:
//
//	workers := river.NewWorkers()
//	river.AddWorker(workers, riverdelivery.NewWorker(sender))
//	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
//		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 20}},
//		Workers: workers,
//	})
//
// # Enqueue
//
// Inside an idem.RunInTx handler, build the event with webhook.NewDelivery
// and pass it to Enqueue with the handler's pgx.Tx. A rolled-back request
// leaves no job; a committed one leaves exactly one, and a replay of the
// request (which does not run the handler) adds none. The job holds the URL
// and the exact body bytes, never the key: every attempt is signed afresh by
// the worker's Sender over the same bytes.
//
// # Delivery, retries and dead jobs
//
// The Worker makes one attempt per River attempt. A 2xx completes the job.
// A retryable failure (429, 5xx, a network error, ...) returns an error, and
// NextRetry schedules the next attempt by the Sender's RetryPolicy
// (exponential backoff with jitter). A permanent failure (409, other 4xx,
// a signature rejection, a refused address), and a retryable one whose next
// attempt would fall past the retry horizon (measured from the job's
// creation, which precedes the first attempt), cancel the job: River then
// keeps it, dead, in river_job with state 'cancelled' and every attempt's
// error in its errors column (an error names the receiver's status or the
// kind of network failure, never the URL) until
// river.Config.CancelledJobRetentionPeriod passes. A job still running when
// its process dies is rescued by River's leader after
// river.Config.RescueStuckJobsAfter and delivered again: with the same
// body and idempotency_key, which the receiver dedupes.
package riverdelivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/webhook"
)

// Kind is the River job kind of a webhook delivery. It is stored in
// river_job.kind: it never changes.
const Kind = "adcp_webhook_delivery"

// MaxAttempts is the River attempt limit of a delivery job. It is only a
// backstop: the retry horizon ends a delivery first under any RetryPolicy
// whose Max delay is at least a few minutes.
const MaxAttempts = 1000

// Args is the River job of one webhook delivery: where to, and the exact
// bytes. It holds no key material.
type Args struct {
	// URL is the receiver's push_notification_config.url.
	URL string `json:"url"`
	// IdempotencyKey is the event's idempotency_key; a delivery is enqueued
	// at most once while its job is live or completed (River unique job).
	IdempotencyKey string `json:"idempotency_key" river:"unique"`
	// Body is the serialised event, sent unchanged on every attempt. It is
	// stored base64-encoded, so the bytes survive Postgres's jsonb.
	Body []byte `json:"body"`
}

// Kind implements river.JobArgs.
func (Args) Kind() string { return Kind }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (Args) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: MaxAttempts, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// Delivery returns the webhook.Delivery the job sends.
func (a Args) Delivery() webhook.Delivery {
	return webhook.Delivery{URL: a.URL, IdempotencyKey: a.IdempotencyKey, Body: a.Body}
}

// ErrInvalidDelivery is returned by Enqueue for a delivery without a URL,
// a well-formed idempotency_key or a body.
var ErrInvalidDelivery = errors.New("riverdelivery: delivery needs a URL, an idempotency_key and a body")

// Enqueue inserts the delivery of d as a River job in tx, the caller's
// transaction (typically the pgx.Tx of an idem.RunInTx handler), so that
// the job exists if and only if tx commits. client is any River client on
// the same database (an insert-only client, without Queues, will do). opts
// may override the queue, priority or schedule; nil keeps Args.InsertOpts.
func Enqueue(ctx context.Context, client *river.Client[pgx.Tx], tx pgx.Tx, d webhook.Delivery, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	if d.URL == "" || len(d.Body) == 0 || idem.ValidateKey(d.IdempotencyKey) != nil {
		return nil, ErrInvalidDelivery
	}
	res, err := client.InsertTx(ctx, tx, Args{URL: d.URL, IdempotencyKey: d.IdempotencyKey, Body: d.Body}, opts)
	if err != nil {
		return nil, fmt.Errorf("riverdelivery: enqueue: %w", err)
	}
	return res, nil
}

// Worker works delivery jobs with a webhook.Sender. Register it with
// river.AddWorker. It is safe for concurrent use.
type Worker struct {
	river.WorkerDefaults[Args]
	sender *webhook.Sender
}

// NewWorker returns a Worker that delivers with s, which holds the signing
// key, the SSRF guard and the retry policy.
func NewWorker(s *webhook.Sender) *Worker {
	return &Worker{sender: s}
}

// ErrHorizonPassed is the cause recorded on a job given up because its
// next attempt would fall past the retry horizon.
var ErrHorizonPassed = errors.New("riverdelivery: retry horizon passed")

// Work makes one delivery attempt. See the package documentation for what
// each outcome does to the job.
func (w *Worker) Work(ctx context.Context, job *river.Job[Args]) error {
	retry := w.sender.Retry()
	if time.Now().After(job.CreatedAt.Add(retry.Horizon)) {
		return river.JobCancel(ErrHorizonPassed)
	}
	err := w.sender.Send(ctx, job.Args.Delivery())
	switch {
	case err == nil:
		return nil
	case webhook.IsPermanent(err):
		return river.JobCancel(err)
	}
	if _, ok := retry.Next(job.Attempt, job.CreatedAt, time.Now()); !ok {
		return river.JobCancel(fmt.Errorf("%w: %w", ErrHorizonPassed, err))
	}
	return err
}

// NextRetry schedules the attempt after a retryable failure by the
// Sender's RetryPolicy.
func (w *Worker) NextRetry(job *river.Job[Args]) time.Time {
	now := time.Now()
	next, ok := w.sender.Retry().Next(job.Attempt, job.CreatedAt, now)
	if !ok {
		return now // past the horizon (a rescued job): its next Work cancels it
	}
	return next
}

// Timeout bounds an attempt: the Sender's timeout and a margin for
// signing and bookkeeping.
func (w *Worker) Timeout(*river.Job[Args]) time.Duration {
	return w.sender.Timeout() + 5*time.Second
}

// migrateLock is the advisory lock key that serialises Migrate across
// replicas: the bytes of "adcpwhk" as a number.
const migrateLock = 0x6164637077686b

// Migrate applies River's migrations (rivermigrate, the "main" line) to
// the database of pool, in the schema its search_path selects. It holds a
// Postgres advisory lock meanwhile, on a connection of its own, so replicas
// may all call it at start-up. Package riverdelivery has no tables of its
// own; call it next to package migrations' Up.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("riverdelivery: migrate: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrateLock)); err != nil {
		return fmt.Errorf("riverdelivery: migrate: lock: %w", err)
	}
	// Closing the connection releases the lock too; unlock first anyway.
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(migrateLock))
	}()
	m, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return fmt.Errorf("riverdelivery: migrate: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("riverdelivery: migrate: %w", err)
	}
	return nil
}
