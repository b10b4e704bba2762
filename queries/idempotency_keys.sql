-- name: IdempotencyKeyClaim :one
-- IdempotencyKeyClaim claims a key in one round trip, or reads the row that
-- holds it.
--
-- It first sets lock_timeout for the rest of the transaction, remembering
-- the value it replaces in adcp_idem.lock_timeout_before (unless a value is
-- already remembered there). Then it inserts an in-flight row owned by
-- owner_token that expires after expires_ms. If another transaction holds an
-- uncommitted row for the key, the insert waits for it, bounded by that
-- lock_timeout. On a successful insert, RETURNING puts lock_timeout back (and
-- forgets the remembered value) and the result is a single row with claimed
-- true. Otherwise the result is the existing row with claimed false, or no
-- row at all if that row became visible only after this statement's
-- snapshot (the caller then tries again).
--
-- The nested set_config calls fix the order of the effects: a function's
-- arguments are evaluated before the function.
WITH claimed AS (
    INSERT INTO idempotency_keys (
        principal_id, key, operation, request_hash, owner_token, created_at, expires_at
    )
    SELECT sqlc.arg('principal_id'), sqlc.arg('key'), sqlc.arg('operation'),
           sqlc.arg('request_hash'), sqlc.arg('owner_token')::text,
           s.now, s.now + sqlc.arg('expires_ms')::bigint * interval '1 millisecond'
    FROM (
        SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now,
               set_config('lock_timeout', sqlc.arg('lock_timeout')::text || left(
                   set_config('adcp_idem.lock_timeout_before',
                       coalesce(nullif(current_setting('adcp_idem.lock_timeout_before', true), ''),
                                current_setting('lock_timeout')), true), 0), true) AS lock_timeout
    ) AS s
    ON CONFLICT (principal_id, key) DO NOTHING
    RETURNING set_config('adcp_idem.lock_timeout_before', left(
        set_config('lock_timeout', current_setting('adcp_idem.lock_timeout_before'), true), 0), true) AS restored
)
SELECT true AS claimed, ''::text AS operation, ''::bytea AS request_hash, NULL::bytea AS response,
       now()::timestamptz AS expires_at, now()::timestamptz AS db_now
FROM claimed
UNION ALL
SELECT false, k.operation, k.request_hash, k.response, k.expires_at,
       coalesce(sqlc.narg('now')::timestamptz, now())::timestamptz
FROM idempotency_keys AS k
WHERE k.principal_id = sqlc.arg('principal_id') AND k.key = sqlc.arg('key')
  AND NOT EXISTS (SELECT 1 FROM claimed);

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
    expires_at   = clock.now + sqlc.arg('expires_ms')::bigint * interval '1 millisecond'
FROM (SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now) AS clock
WHERE k.principal_id = sqlc.arg('principal_id') AND k.key = sqlc.arg('key')
  AND CASE WHEN k.response IS NULL THEN k.expires_at < clock.now
           ELSE k.expires_at + sqlc.arg('retention_ms')::bigint * interval '1 millisecond' < clock.now
      END
RETURNING k.created_at,
    -- Puts back the lock_timeout that IdempotencyKeyClaim replaced, if any.
    set_config('adcp_idem.lock_timeout_before', left(set_config('lock_timeout',
        coalesce(nullif(current_setting('adcp_idem.lock_timeout_before', true), ''),
                 current_setting('lock_timeout')), true), 0), true) AS restored;

-- name: IdempotencyKeyComplete :execrows
-- IdempotencyKeyComplete stores the response of an in-flight key, but only for
-- its owner: a request whose claim was taken over affects no row. The stored
-- answer is replayed for ttl_ms from now; with ttl_ms NULL, expires_at stays
-- as the claim set it, which lets Postgres update the row in place (HOT, no
-- index entries) as RunInTx does.
UPDATE idempotency_keys AS k
SET response    = sqlc.arg('response'),
    owner_token = NULL,
    expires_at  = coalesce(clock.now + sqlc.narg('ttl_ms')::bigint * interval '1 millisecond', k.expires_at)
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
