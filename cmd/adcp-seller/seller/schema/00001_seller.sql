-- +goose Up
-- The reference seller's business tables. Media buys and their webhook
-- events are written in the same transaction as the idempotency answer.
CREATE TABLE seller_media_buys (
    media_buy_id   text        PRIMARY KEY,
    principal_id   text        NOT NULL,
    account        jsonb       NOT NULL,
    status         text        NOT NULL,
    currency       text        NOT NULL,
    total_budget   double precision NOT NULL,
    start_time     text        NOT NULL,
    end_time       text        NOT NULL,
    packages       jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX seller_media_buys_principal_idx ON seller_media_buys (principal_id, created_at);

-- The transactional outbox: one row per webhook event, written with the
-- media buy, delivered after commit by the dispatcher, at least once, with
-- a stable idempotency_key so the receiver can drop duplicates.
CREATE TABLE seller_webhook_outbox (
    id              bigserial   PRIMARY KEY,
    media_buy_id    text        NOT NULL REFERENCES seller_media_buys (media_buy_id),
    url             text        NOT NULL,
    body            jsonb       NOT NULL,
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    delivered_at    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX seller_webhook_outbox_pending_idx ON seller_webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;

-- +goose Down
DROP TABLE seller_webhook_outbox;
DROP TABLE seller_media_buys;
