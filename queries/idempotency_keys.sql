-- name: IdempotencyKeySetLockTimeout :one
-- IdempotencyKeySetLockTimeout sets lock_timeout for the rest of the current
-- transaction and returns the value it replaces, so that the caller can put
-- it back once the claim is done.
WITH previous AS MATERIALIZED (
    SELECT current_setting('lock_timeout') AS value
)
SELECT previous.value::text AS previous,
       set_config('lock_timeout', sqlc.arg('lock_timeout')::text, true)::text AS applied
FROM previous;

-- name: IdempotencyKeyInsert :one
-- IdempotencyKeyInsert claims a key that no row holds: it inserts an in-flight
-- row owned by owner_token whose lease ends after lease_ms. When another
-- transaction holds an uncommitted row for the key, the insert waits for it
-- (bounded by lock_timeout); when a committed row exists it does nothing and
-- returns no row.
INSERT INTO idempotency_keys (
    principal_id, key, operation, request_hash, owner_token, created_at, expires_at
)
SELECT sqlc.arg('principal_id'), sqlc.arg('key'), sqlc.arg('operation'),
       sqlc.arg('request_hash'), sqlc.arg('owner_token')::text,
       clock.now, clock.now + sqlc.arg('lease_ms')::bigint * interval '1 millisecond'
FROM (SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now) AS clock
ON CONFLICT (principal_id, key) DO NOTHING
RETURNING created_at;

-- name: IdempotencyKeyGet :one
-- IdempotencyKeyGet reads the row for a key together with the clock the
-- caller must judge it by.
SELECT operation, request_hash, response, owner_token, created_at, expires_at,
       coalesce(sqlc.narg('now')::timestamptz, now())::timestamptz AS db_now
FROM idempotency_keys
WHERE principal_id = sqlc.arg('principal_id') AND key = sqlc.arg('key');

-- name: IdempotencyKeyTakeOver :one
-- IdempotencyKeyTakeOver claims a key whose row may be reused: an in-flight
-- row whose lease has ended (its owner crashed or gave up), or a completed
-- row whose tombstone has outlived retention_ms. The row lock and the
-- re-checked condition make concurrent takeovers safe: exactly one wins, the
-- others get no row.
UPDATE idempotency_keys AS k
SET operation    = sqlc.arg('operation'),
    request_hash = sqlc.arg('request_hash'),
    response     = NULL,
    owner_token  = sqlc.arg('owner_token')::text,
    created_at   = clock.now,
    expires_at   = clock.now + sqlc.arg('lease_ms')::bigint * interval '1 millisecond'
FROM (SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now) AS clock
WHERE k.principal_id = sqlc.arg('principal_id') AND k.key = sqlc.arg('key')
  AND CASE WHEN k.response IS NULL THEN k.expires_at < clock.now
           ELSE k.expires_at + sqlc.arg('retention_ms')::bigint * interval '1 millisecond' < clock.now
      END
RETURNING k.created_at;

-- name: IdempotencyKeyComplete :execrows
-- IdempotencyKeyComplete stores the response of an in-flight key, but only for
-- its owner: a request whose claim was taken over affects no row. The stored
-- answer is replayed for ttl_ms from now.
UPDATE idempotency_keys AS k
SET response    = sqlc.arg('response'),
    owner_token = NULL,
    expires_at  = clock.now + sqlc.arg('ttl_ms')::bigint * interval '1 millisecond'
FROM (SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now) AS clock
WHERE k.principal_id = sqlc.arg('principal_id') AND k.key = sqlc.arg('key')
  AND k.owner_token = sqlc.arg('owner_token')::text AND k.response IS NULL;

-- name: IdempotencyKeyRelease :execrows
-- IdempotencyKeyRelease deletes an in-flight key, but only for its owner, so
-- that a retry runs the work again.
DELETE FROM idempotency_keys
WHERE principal_id = sqlc.arg('principal_id') AND key = sqlc.arg('key')
  AND owner_token = sqlc.arg('owner_token')::text AND response IS NULL;

-- name: IdempotencyKeyDeleteExpired :execrows
-- IdempotencyKeyDeleteExpired deletes up to max_rows rows whose expires_at
-- lies more than retention_ms in the past, oldest first, through the expiry
-- index. Rows locked by a running request are skipped, not waited for.
DELETE FROM idempotency_keys AS k
USING (
    SELECT e.principal_id, e.key
    FROM idempotency_keys AS e
    WHERE e.expires_at < coalesce(sqlc.narg('now')::timestamptz, now())
                         - sqlc.arg('retention_ms')::bigint * interval '1 millisecond'
    ORDER BY e.expires_at
    LIMIT sqlc.arg('max_rows')::int
    FOR UPDATE SKIP LOCKED
) AS doomed
WHERE k.principal_id = doomed.principal_id AND k.key = doomed.key;
