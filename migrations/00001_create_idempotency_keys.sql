-- +goose Up
-- One row per (principal, key). A row is either in flight (response IS NULL:
-- a request owns the key until expires_at, its lease) or completed (response
-- holds the stored answer, replayed until expires_at and remembered as a
-- tombstone for the configured retention after that).
CREATE TABLE idempotency_keys (
    principal_id text        NOT NULL,
    key          text        NOT NULL,
    operation    text        NOT NULL,
    request_hash bytea       NOT NULL,
    response     bytea,
    owner_token  text,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (principal_id, key),
    CONSTRAINT idempotency_keys_principal_not_empty CHECK (principal_id <> ''),
    CONSTRAINT idempotency_keys_key_length CHECK (char_length(key) BETWEEN 16 AND 255),
    CONSTRAINT idempotency_keys_hash_length CHECK (octet_length(request_hash) = 32),
    CONSTRAINT idempotency_keys_in_flight_has_owner CHECK (response IS NOT NULL OR owner_token IS NOT NULL)
);

-- The sweeper deletes in expires_at order, in bounded batches.
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
