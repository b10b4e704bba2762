-- +goose Up
-- Accounts get a table of their own: sync_accounts provisions them before
-- any media buy, comply_test_controller's force_account_status changes
-- their status, and list_accounts lists them. A media buy under a natural
-- key (brand + operator) not synced before still opens its account, now
-- as a row here. The accounts media buys were made under so far are
-- carried over, oldest first.
CREATE TABLE seller_accounts (
    principal_id text        NOT NULL,
    account_id   text        NOT NULL,
    account      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- seq orders the listing as the accounts were added, also those one
    -- transaction adds (which share created_at).
    seq          bigserial   NOT NULL,
    PRIMARY KEY (principal_id, account_id)
);
CREATE INDEX seller_accounts_listing_idx ON seller_accounts (principal_id, seq);
INSERT INTO seller_accounts (principal_id, account_id, account, created_at)
SELECT DISTINCT ON (principal_id, account_id) principal_id, account_id, account, created_at
FROM seller_media_buys
ORDER BY principal_id, account_id, created_at;
-- The carried-over accounts list oldest first.
UPDATE seller_accounts SET seq = o.n
FROM (SELECT principal_id, account_id, row_number() OVER (ORDER BY created_at, account_id) AS n FROM seller_accounts) AS o
WHERE seller_accounts.principal_id = o.principal_id AND seller_accounts.account_id = o.account_id;
SELECT setval(pg_get_serial_sequence('seller_accounts', 'seq'), coalesce((SELECT max(seq) FROM seller_accounts), 0) + 1, false);

-- +goose Down
DROP TABLE seller_accounts;
