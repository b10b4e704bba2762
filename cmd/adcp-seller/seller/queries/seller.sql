-- name: MediaBuyInsert :exec
-- MediaBuyInsert stores a media buy (inside the idempotent transaction).
INSERT INTO seller_media_buys (
    media_buy_id, principal_id, account, status, currency, total_budget, start_time, end_time, packages
) VALUES (
    sqlc.arg('media_buy_id'), sqlc.arg('principal_id'), sqlc.arg('account'), sqlc.arg('status'),
    sqlc.arg('currency'), sqlc.arg('total_budget'), sqlc.arg('start_time'), sqlc.arg('end_time'), sqlc.arg('packages')
);

-- name: MediaBuyList :many
-- MediaBuyList returns a principal's media buys, all of them or those named.
SELECT media_buy_id, account, status, currency, total_budget, start_time, end_time, packages, created_at
FROM seller_media_buys
WHERE principal_id = sqlc.arg('principal_id')
  AND (cardinality(sqlc.arg('ids')::text[]) = 0 OR media_buy_id = ANY (sqlc.arg('ids')::text[]))
ORDER BY created_at, media_buy_id;

-- name: MediaBuyCount :one
-- MediaBuyCount counts a principal's media buys.
SELECT count(*) FROM seller_media_buys WHERE principal_id = sqlc.arg('principal_id');

-- name: OutboxInsert :exec
-- OutboxInsert queues a webhook event (inside the idempotent transaction).
INSERT INTO seller_webhook_outbox (media_buy_id, url, body)
VALUES (sqlc.arg('media_buy_id'), sqlc.arg('url'), sqlc.arg('body'));

-- name: OutboxLease :many
-- OutboxLease takes up to max_rows due, undelivered events for lease_ms, so
-- that concurrent dispatchers (several seller processes) never send one
-- event at the same time.
UPDATE seller_webhook_outbox AS o
SET lease_until = now() + sqlc.arg('lease_ms')::bigint * interval '1 millisecond',
    attempts    = o.attempts + 1
WHERE o.id IN (
    SELECT p.id FROM seller_webhook_outbox AS p
    WHERE p.delivered_at IS NULL AND p.next_attempt_at <= now()
      AND (p.lease_until IS NULL OR p.lease_until < now())
    ORDER BY p.next_attempt_at, p.id
    LIMIT sqlc.arg('max_rows')::int
    FOR UPDATE SKIP LOCKED
)
RETURNING o.id, o.url, o.body, o.attempts;

-- name: OutboxDelivered :exec
-- OutboxDelivered marks an event delivered.
UPDATE seller_webhook_outbox SET delivered_at = now(), lease_until = NULL, last_error = NULL
WHERE id = sqlc.arg('id');

-- name: OutboxRetryLater :exec
-- OutboxRetryLater records a failed attempt and when to try again.
UPDATE seller_webhook_outbox
SET lease_until = NULL, last_error = sqlc.arg('last_error')::text,
    next_attempt_at = now() + sqlc.arg('delay_ms')::bigint * interval '1 millisecond'
WHERE id = sqlc.arg('id');
