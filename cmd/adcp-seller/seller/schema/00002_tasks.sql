-- +goose Up
-- AdCP 3.2: media buys carry their account id, name, revision and
-- confirmation time; asynchronous create_media_buy tasks get a table; and
-- webhooks move from the seller's own outbox to River (package
-- webhook/riverdelivery), whose jobs commit in the same transaction.
ALTER TABLE seller_media_buys
    ADD COLUMN account_id   text        NOT NULL DEFAULT '',
    ADD COLUMN name         text        NOT NULL DEFAULT '',
    ADD COLUMN revision     int         NOT NULL DEFAULT 1,
    ADD COLUMN confirmed_at timestamptz;
UPDATE seller_media_buys SET confirmed_at = created_at, account_id = 'acc_' || md5(account::text);
ALTER TABLE seller_media_buys ALTER COLUMN confirmed_at SET NOT NULL;
CREATE INDEX seller_media_buys_account_idx ON seller_media_buys (principal_id, account_id);

-- One row per task: a submitted create_media_buy until it completes, and
-- the completed record of a synchronous create that registered a webhook.
CREATE TABLE seller_tasks (
    task_id      text        PRIMARY KEY,
    principal_id text        NOT NULL,
    task_type    text        NOT NULL,
    status       text        NOT NULL,
    version      text        NOT NULL,
    buy          jsonb,          -- the media buy a submitted create makes on completion
    push         jsonb,          -- the webhook registration (url, operation_id, token)
    context      jsonb,          -- the originating request's context, echoed in webhooks
    result       jsonb,          -- the terminal result
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    completed_at timestamptz
);

-- The outbox is replaced by River. Refuse to drop undelivered events.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM seller_webhook_outbox WHERE delivered_at IS NULL) THEN
        RAISE EXCEPTION 'seller_webhook_outbox holds undelivered webhooks: deliver them with the previous seller before upgrading';
    END IF;
END $$;
-- +goose StatementEnd
DROP TABLE seller_webhook_outbox;

-- +goose Down
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
DROP TABLE seller_tasks;
DROP INDEX seller_media_buys_account_idx;
ALTER TABLE seller_media_buys DROP COLUMN confirmed_at, DROP COLUMN revision, DROP COLUMN name, DROP COLUMN account_id;
