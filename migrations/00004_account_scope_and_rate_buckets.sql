-- +goose Up
-- AdCP 3.2 scopes the cache by (authenticated agent, account), at the
-- storage layer: the account joins the primary key. Rows written before
-- this migration belong to the empty account, which is what requests
-- without an account still use, so they stay reachable.
ALTER TABLE idempotency_keys ADD COLUMN account_id text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (principal_id, account_id, key);

-- The claim, with the account, and the in-flight bound for a transaction
-- the library owns; the steps are those of migration 00003.
DROP FUNCTION idempotency_key_claim(text, text, text, bytea, text, bigint, bigint, text, timestamptz);
-- +goose StatementBegin
CREATE FUNCTION idempotency_key_claim(
    p_principal_id text,
    p_account_id   text,
    p_key          text,
    p_operation    text,
    p_request_hash bytea,
    p_owner_token  text,
    p_expires_ms   bigint,
    p_retention_ms bigint,
    p_lock_timeout text,
    p_idle_timeout text,
    p_now          timestamptz,
    OUT claimed      boolean,
    OUT operation    text,
    OUT request_hash bytea,
    OUT response     bytea,
    OUT expires_at   timestamptz,
    OUT db_now       timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    caller_lock_timeout text := current_setting('lock_timeout');
    t_now timestamptz := coalesce(p_now, statement_timestamp());
    held  idempotency_keys%ROWTYPE;
BEGIN
    -- 1. Bound the wait of step 2 for this transaction only. The caller's
    --    value is put back before returning, so the handler's own
    --    statements never run under it. (If a statement below fails, the
    --    transaction or savepoint is rolled back, and the setting with it.)
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    -- A transaction that holds a claim may not sit idle past the in-flight
    -- bound (Config.InFlightMax): a hung owner's claim is rolled back. Only
    -- when the library owns the transaction (empty otherwise).
    -- It only tightens: an operator's shorter setting stays (0 is none).
    IF p_idle_timeout <> '' AND (current_setting('idle_in_transaction_session_timeout')::interval = interval '0'
       OR current_setting('idle_in_transaction_session_timeout')::interval > p_idle_timeout::interval) THEN
        PERFORM set_config('idle_in_transaction_session_timeout', p_idle_timeout, true);
    END IF;

    -- A few rounds, because the holder found in step 3 may vanish (released,
    -- swept) or be taken over by someone else before step 4.
    FOR attempt IN 1..4 LOOP
        -- 2. Claim with a new row. If another transaction inserted the key
        --    and has not committed yet, this INSERT waits for it on the
        --    primary key's unique index: that wait is what serialises
        --    concurrent retries. It takes no lock when the key is already
        --    committed (a replay writes nothing).
        INSERT INTO idempotency_keys AS k (
            principal_id, account_id, key, operation, request_hash, owner_token, created_at, expires_at)
        VALUES (p_principal_id, p_account_id, p_key, p_operation, p_request_hash, p_owner_token,
                t_now, t_now + p_expires_ms * interval '1 millisecond')
        ON CONFLICT (principal_id, account_id, key) DO NOTHING;
        IF FOUND THEN
            claimed := true;
            EXIT;
        END IF;

        -- 3. The key is held: read the holder, without locking it.
        SELECT * INTO held FROM idempotency_keys AS k
        WHERE k.principal_id = p_principal_id AND k.account_id = p_account_id AND k.key = p_key;
        CONTINUE WHEN NOT FOUND;

        -- 4. A holder that no longer holds the key (an in-flight row past
        --    its lease, a completed row past its tombstone retention) is
        --    taken over. The UPDATE re-checks that condition under the row
        --    lock, so of concurrent takeovers exactly one wins.
        IF (held.response IS NULL AND held.expires_at < t_now)
           OR (held.response IS NOT NULL AND held.expires_at + p_retention_ms * interval '1 millisecond' < t_now) THEN
            UPDATE idempotency_keys AS k
            SET operation = p_operation, request_hash = p_request_hash, response = NULL,
                owner_token = p_owner_token, created_at = t_now,
                expires_at = t_now + p_expires_ms * interval '1 millisecond'
            WHERE k.principal_id = p_principal_id AND k.account_id = p_account_id AND k.key = p_key
              AND CASE WHEN k.response IS NULL THEN k.expires_at < t_now
                       ELSE k.expires_at + p_retention_ms * interval '1 millisecond' < t_now END;
            IF FOUND THEN
                claimed := true;
                EXIT;
            END IF;
            CONTINUE;
        END IF;

        -- 5. The holder stands: report it.
        claimed := false;
        operation := held.operation;
        request_hash := held.request_hash;
        response := held.response;
        expires_at := held.expires_at;
        EXIT;
    END LOOP;
    -- claimed stays NULL when the key changed hands on every round; the
    -- caller reports that as in flight.
    db_now := t_now;
    PERFORM set_config('lock_timeout', caller_lock_timeout, true);
END
$$;
-- +goose StatementEnd

-- Token buckets shared by every replica (idem.NewPostgresLimiter): one row
-- per budget, holding the tokens left and when they were counted.
CREATE TABLE idempotency_rate_buckets (
    bucket     text             PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz      NOT NULL
);

-- idempotency_rate_take takes one token from bucket, refilled at p_rate a
-- second up to p_burst, and returns 0 when it did, or how many seconds
-- until a token is there when it did not. One statement, atomic under the
-- row lock of the upsert.
-- +goose StatementBegin
CREATE FUNCTION idempotency_rate_take(
    p_bucket text,
    p_rate   double precision,
    p_burst  double precision,
    p_now    timestamptz,
    OUT wait_seconds double precision
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    t_now   timestamptz := coalesce(p_now, statement_timestamp());
    t_left  double precision;
BEGIN
    INSERT INTO idempotency_rate_buckets AS b (bucket, tokens, updated_at)
    VALUES (p_bucket, p_burst, t_now)
    ON CONFLICT (bucket) DO UPDATE
        SET tokens = least(p_burst, b.tokens + greatest(0, extract(epoch FROM t_now - b.updated_at)) * p_rate),
            updated_at = greatest(b.updated_at, t_now)
    RETURNING tokens INTO t_left;
    IF t_left >= 1 THEN
        UPDATE idempotency_rate_buckets SET tokens = tokens - 1 WHERE bucket = p_bucket;
        wait_seconds := 0;
    ELSE
        wait_seconds := (1 - t_left) / p_rate;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION idempotency_rate_take(text, double precision, double precision, timestamptz);
DROP TABLE idempotency_rate_buckets;
DROP FUNCTION idempotency_key_claim(text, text, text, text, bytea, text, bigint, bigint, text, text, timestamptz);
DELETE FROM idempotency_keys WHERE account_id <> '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (principal_id, key);
ALTER TABLE idempotency_keys DROP COLUMN account_id;
-- +goose StatementBegin
CREATE FUNCTION idempotency_key_claim(
    p_principal_id text,
    p_key          text,
    p_operation    text,
    p_request_hash bytea,
    p_owner_token  text,
    p_expires_ms   bigint,
    p_retention_ms bigint,
    p_lock_timeout text,
    p_now          timestamptz,
    OUT claimed      boolean,
    OUT operation    text,
    OUT request_hash bytea,
    OUT response     bytea,
    OUT expires_at   timestamptz,
    OUT db_now       timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    caller_lock_timeout text := current_setting('lock_timeout');
    t_now timestamptz := coalesce(p_now, statement_timestamp());
    held  idempotency_keys%ROWTYPE;
BEGIN
    -- 1. Bound the wait of step 2 for this transaction only. The caller's
    --    value is put back before returning, so the handler's own
    --    statements never run under it. (If a statement below fails, the
    --    transaction or savepoint is rolled back, and the setting with it.)
    PERFORM set_config('lock_timeout', p_lock_timeout, true);

    -- A few rounds, because the holder found in step 3 may vanish (released,
    -- swept) or be taken over by someone else before step 4.
    FOR attempt IN 1..4 LOOP
        -- 2. Claim with a new row. If another transaction inserted the key
        --    and has not committed yet, this INSERT waits for it on the
        --    primary key's unique index: that wait is what serialises
        --    concurrent retries. It takes no lock when the key is already
        --    committed (a replay writes nothing).
        INSERT INTO idempotency_keys AS k (
            principal_id, key, operation, request_hash, owner_token, created_at, expires_at)
        VALUES (p_principal_id, p_key, p_operation, p_request_hash, p_owner_token,
                t_now, t_now + p_expires_ms * interval '1 millisecond')
        ON CONFLICT (principal_id, key) DO NOTHING;
        IF FOUND THEN
            claimed := true;
            EXIT;
        END IF;

        -- 3. The key is held: read the holder, without locking it.
        SELECT * INTO held FROM idempotency_keys AS k
        WHERE k.principal_id = p_principal_id AND k.key = p_key;
        CONTINUE WHEN NOT FOUND;

        -- 4. A holder that no longer holds the key (an in-flight row past
        --    its lease, a completed row past its tombstone retention) is
        --    taken over. The UPDATE re-checks that condition under the row
        --    lock, so of concurrent takeovers exactly one wins.
        IF (held.response IS NULL AND held.expires_at < t_now)
           OR (held.response IS NOT NULL AND held.expires_at + p_retention_ms * interval '1 millisecond' < t_now) THEN
            UPDATE idempotency_keys AS k
            SET operation = p_operation, request_hash = p_request_hash, response = NULL,
                owner_token = p_owner_token, created_at = t_now,
                expires_at = t_now + p_expires_ms * interval '1 millisecond'
            WHERE k.principal_id = p_principal_id AND k.key = p_key
              AND CASE WHEN k.response IS NULL THEN k.expires_at < t_now
                       ELSE k.expires_at + p_retention_ms * interval '1 millisecond' < t_now END;
            IF FOUND THEN
                claimed := true;
                EXIT;
            END IF;
            CONTINUE;
        END IF;

        -- 5. The holder stands: report it.
        claimed := false;
        operation := held.operation;
        request_hash := held.request_hash;
        response := held.response;
        expires_at := held.expires_at;
        EXIT;
    END LOOP;
    -- claimed stays NULL when the key changed hands on every round; the
    -- caller reports that as in flight.
    db_now := t_now;
    PERFORM set_config('lock_timeout', caller_lock_timeout, true);
END
$$;
-- +goose StatementEnd
