-- +goose Up
-- idempotency_key_claim claims a key, or reports the row that holds it, in
-- one call (one round trip). It replaces a single-statement claim whose
-- nested set_config calls were hard to read; the steps below do the same
-- thing in order. See docs/ARCHITECTURE.md, "The claim, step by step".
--
-- It returns claimed = true when the key is now owned by p_owner_token (a
-- new row, or a row taken over), or claimed = false with the holder's
-- operation, request_hash, response and expires_at, or claimed = NULL when
-- the key changed hands on every attempt. db_now is the instant the rows
-- were judged at: p_now when a test passes one, otherwise the time of the
-- statement that called the function.
--
-- Under READ COMMITTED every statement in a plpgsql function takes a fresh
-- snapshot, so the SELECT in step 3 sees a holder that committed while the
-- INSERT of step 2 waited for it.
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

-- +goose Down
DROP FUNCTION idempotency_key_claim(text, text, text, bytea, text, bigint, bigint, text, timestamptz);
