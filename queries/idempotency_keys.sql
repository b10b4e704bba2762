-- name: IdempotencyKeyClaim :one
-- IdempotencyKeyClaim claims a key for owner_token, or reads the row that
-- holds it, in one round trip: see the function idempotency_key_claim in
-- migrations/00003_idempotency_key_claim.sql for the steps. A claimed key
-- expires after expires_ms (the lease, or for RunInTx the replay window);
-- a concurrent uncommitted claim is waited for up to lock_timeout. Claimed
-- is NULL when the key changed hands on every attempt.
SELECT * FROM idempotency_key_claim(
    sqlc.arg('principal_id')::text, sqlc.arg('account_id')::text, sqlc.arg('key')::text,
    sqlc.arg('operation')::text, sqlc.arg('request_hash')::bytea, sqlc.arg('owner_token')::text,
    sqlc.arg('expires_ms')::bigint, sqlc.arg('retention_ms')::bigint,
    sqlc.arg('lock_timeout')::text, sqlc.arg('idle_timeout')::text, sqlc.narg('now')::timestamptz);

-- name: IdempotencyKeyGet :one
-- IdempotencyKeyGet reads the row for a key together with the clock the
-- caller must judge it by.
SELECT operation, request_hash, response, owner_token, created_at, expires_at,
       coalesce(sqlc.narg('now')::timestamptz, statement_timestamp())::timestamptz AS db_now
FROM idempotency_keys
WHERE principal_id = sqlc.arg('principal_id') AND account_id = sqlc.arg('account_id') AND key = sqlc.arg('key');

-- name: IdempotencyKeyRenew :execrows
-- IdempotencyKeyRenew extends the lease of an in-flight key to lease_ms from
-- now, but only for its owner: a request whose claim was taken over affects
-- no row.
UPDATE idempotency_keys AS k
SET expires_at = clock.now + sqlc.arg('lease_ms')::bigint * interval '1 millisecond'
FROM (SELECT coalesce(sqlc.narg('now')::timestamptz, statement_timestamp()) AS now) AS clock
WHERE k.principal_id = sqlc.arg('principal_id') AND k.account_id = sqlc.arg('account_id') AND k.key = sqlc.arg('key')
  AND k.owner_token = sqlc.arg('owner_token')::text AND k.response IS NULL;

-- name: IdempotencyKeyComplete :execrows
-- IdempotencyKeyComplete stores the response of an in-flight key, but only for
-- its owner: a request whose claim was taken over affects no row. The stored
-- answer is replayed for ttl_ms from the claim (retention counts from the
-- first accepted request, never from a later step); with ttl_ms NULL,
-- expires_at stays as the claim set it, which lets Postgres update the row
-- in place (HOT, no index entries) as RunInTx does.
UPDATE idempotency_keys AS k
SET response    = sqlc.arg('response'),
    owner_token = NULL,
    expires_at  = coalesce(k.created_at + sqlc.narg('ttl_ms')::bigint * interval '1 millisecond', k.expires_at)
FROM (SELECT coalesce(sqlc.narg('now')::timestamptz, statement_timestamp()) AS now) AS clock
WHERE k.principal_id = sqlc.arg('principal_id') AND k.account_id = sqlc.arg('account_id') AND k.key = sqlc.arg('key')
  AND k.owner_token = sqlc.arg('owner_token')::text AND k.response IS NULL;

-- name: IdempotencyKeyCompleteInBatch :one
-- IdempotencyKeyCompleteInBatch stores RunInTx's answer on the row it
-- claimed, as IdempotencyKeyComplete does without a TTL (expires_at stays, so
-- the update can be HOT), for a transaction whose COMMIT is queued behind it
-- in the same pipelined batch: the client cannot look at the row count
-- before the COMMIT runs, so the statement itself fails (division_by_zero,
-- SQLSTATE 22012) unless it updated exactly the claimed row. A failed
-- statement aborts the transaction, and the queued COMMIT never runs.
WITH completed AS (
    UPDATE idempotency_keys AS k
    SET response = sqlc.arg('response'), owner_token = NULL
    WHERE k.principal_id = sqlc.arg('principal_id') AND k.account_id = sqlc.arg('account_id') AND k.key = sqlc.arg('key')
      AND k.owner_token = sqlc.arg('owner_token')::text AND k.response IS NULL
    RETURNING 1
)
SELECT (1 / count(*))::int AS updated FROM completed;

-- name: IdempotencyKeyRelease :execrows
-- IdempotencyKeyRelease deletes an in-flight key, but only for its owner, so
-- that a retry runs the work again.
DELETE FROM idempotency_keys
WHERE principal_id = sqlc.arg('principal_id') AND account_id = sqlc.arg('account_id') AND key = sqlc.arg('key')
  AND owner_token = sqlc.arg('owner_token')::text AND response IS NULL;

-- name: IdempotencyKeyDeleteExpired :execrows
-- IdempotencyKeyDeleteExpired deletes up to max_rows rows whose expires_at
-- lies more than retention_ms in the past, oldest first. The subquery finds
-- them through the expiry index and locks them (rows locked by a running
-- request are skipped, not waited for); the DELETE then takes them by their
-- physical location (ctid), which cannot change while they are locked, so
-- it does not look each of them up again through the primary key. Under
-- READ COMMITTED a row updated meanwhile is re-checked when it is locked, and
-- a version the statement's snapshot cannot see is not deleted.
DELETE FROM idempotency_keys
WHERE ctid = ANY (ARRAY(
    SELECT e.ctid
    FROM idempotency_keys AS e
    WHERE e.expires_at < coalesce(sqlc.narg('now')::timestamptz, statement_timestamp())
                         - sqlc.arg('retention_ms')::bigint * interval '1 millisecond'
    ORDER BY e.expires_at
    LIMIT sqlc.arg('max_rows')::int
    FOR UPDATE SKIP LOCKED
));

-- name: IdempotencyRateTake :one
-- IdempotencyRateTake takes a token from a shared bucket: 0 when it did,
-- otherwise the seconds until one is there.
SELECT wait_seconds::double precision FROM idempotency_rate_take(
    sqlc.arg('bucket')::text, sqlc.arg('rate')::double precision, sqlc.arg('burst')::double precision,
    sqlc.narg('now')::timestamptz);
