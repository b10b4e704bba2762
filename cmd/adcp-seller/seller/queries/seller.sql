-- name: MediaBuyInsert :exec
-- MediaBuyInsert stores a media buy (inside the idempotent transaction).
INSERT INTO seller_media_buys (
    media_buy_id, principal_id, account_id, account, name, status, currency, total_budget,
    start_time, end_time, revision, packages, confirmed_at
) VALUES (
    sqlc.arg('media_buy_id'), sqlc.arg('principal_id'), sqlc.arg('account_id'), sqlc.arg('account'), sqlc.arg('name'),
    sqlc.arg('status'), sqlc.arg('currency'), sqlc.arg('total_budget'), sqlc.arg('start_time'), sqlc.arg('end_time'),
    sqlc.arg('revision'), sqlc.arg('packages'), sqlc.arg('confirmed_at')
);

-- name: MediaBuyUpdate :exec
-- MediaBuyUpdate stores a changed media buy.
UPDATE seller_media_buys
SET status = sqlc.arg('status'), total_budget = sqlc.arg('total_budget'), end_time = sqlc.arg('end_time'),
    revision = sqlc.arg('revision'), packages = sqlc.arg('packages')
WHERE principal_id = sqlc.arg('principal_id') AND media_buy_id = sqlc.arg('media_buy_id');

-- name: MediaBuyForUpdate :many
-- MediaBuyForUpdate reads one of a principal's media buys and locks it
-- until the transaction ends.
SELECT media_buy_id, account, name, status, currency, total_budget, start_time, end_time, revision, packages, confirmed_at
FROM seller_media_buys
WHERE principal_id = sqlc.arg('principal_id') AND media_buy_id = sqlc.arg('media_buy_id')
FOR UPDATE;

-- name: MediaBuyList :many
-- MediaBuyList returns a principal's media buys, all of them or those named.
SELECT media_buy_id, account, name, status, currency, total_budget, start_time, end_time, revision, packages, confirmed_at
FROM seller_media_buys
WHERE principal_id = sqlc.arg('principal_id')
  AND (cardinality(sqlc.arg('ids')::text[]) = 0 OR media_buy_id = ANY (sqlc.arg('ids')::text[]))
ORDER BY created_at, media_buy_id;

-- name: MediaBuyCount :one
-- MediaBuyCount counts a principal's media buys.
SELECT count(*) FROM seller_media_buys WHERE principal_id = sqlc.arg('principal_id');

-- name: AccountGet :many
-- AccountGet finds one of a principal's accounts by id.
SELECT account FROM seller_accounts
WHERE principal_id = sqlc.arg('principal_id') AND account_id = sqlc.arg('account_id');

-- name: AccountForUpdate :many
-- AccountForUpdate reads one of a principal's accounts and locks it until
-- the transaction ends.
SELECT account FROM seller_accounts
WHERE principal_id = sqlc.arg('principal_id') AND account_id = sqlc.arg('account_id')
FOR UPDATE;

-- name: AccountUpsert :exec
-- AccountUpsert stores a new account of a principal, or replaces it.
INSERT INTO seller_accounts (principal_id, account_id, account)
VALUES (sqlc.arg('principal_id'), sqlc.arg('account_id'), sqlc.arg('account'))
ON CONFLICT (principal_id, account_id) DO UPDATE SET account = EXCLUDED.account;

-- name: AccountInsertIfAbsent :exec
-- AccountInsertIfAbsent opens an account of a principal unless it exists
-- (an account a media buy is made under).
INSERT INTO seller_accounts (principal_id, account_id, account)
VALUES (sqlc.arg('principal_id'), sqlc.arg('account_id'), sqlc.arg('account'))
ON CONFLICT (principal_id, account_id) DO NOTHING;

-- name: AccountList :many
-- AccountList returns a principal's accounts, oldest first.
SELECT account FROM seller_accounts WHERE principal_id = sqlc.arg('principal_id')
ORDER BY seq;

-- name: TaskInsert :exec
-- TaskInsert stores a new task (inside the idempotent transaction).
INSERT INTO seller_tasks (task_id, principal_id, task_type, status, version, buy, push, context, result, created_at, updated_at, completed_at)
VALUES (sqlc.arg('task_id'), sqlc.arg('principal_id'), sqlc.arg('task_type'), sqlc.arg('status'), sqlc.arg('version'),
        sqlc.arg('buy'), sqlc.arg('push'), sqlc.arg('context'), sqlc.arg('result'), sqlc.arg('created_at'), sqlc.arg('updated_at'),
        sqlc.narg('completed_at'));

-- name: TaskUpdate :exec
-- TaskUpdate records a task's new status and result.
UPDATE seller_tasks
SET status = sqlc.arg('status'), buy = sqlc.arg('buy'), result = sqlc.arg('result'),
    updated_at = sqlc.arg('updated_at'), completed_at = sqlc.narg('completed_at')
WHERE task_id = sqlc.arg('task_id');

-- name: TaskGet :many
-- TaskGet reads one of a principal's tasks.
SELECT task_id, principal_id, task_type, status, version, buy, push, context, result, created_at, updated_at, completed_at
FROM seller_tasks WHERE task_id = sqlc.arg('task_id') AND principal_id = sqlc.arg('principal_id');

-- name: TaskForUpdate :many
-- TaskForUpdate reads a task and locks it until the transaction ends.
SELECT task_id, principal_id, task_type, status, version, buy, push, context, result, created_at, updated_at, completed_at
FROM seller_tasks WHERE task_id = sqlc.arg('task_id')
FOR UPDATE;

-- name: TaskExists :one
-- TaskExists reports whether a task id is taken.
SELECT EXISTS (SELECT 1 FROM seller_tasks WHERE task_id = sqlc.arg('task_id'));

-- name: CreativeUpsert :one
-- CreativeUpsert stores a creative of a principal, or replaces it, and
-- reports whether it is new.
INSERT INTO seller_creatives (principal_id, creative_id, creative)
VALUES (sqlc.arg('principal_id'), sqlc.arg('creative_id'), sqlc.arg('creative'))
ON CONFLICT (principal_id, creative_id) DO UPDATE SET creative = EXCLUDED.creative
RETURNING (xmax = 0)::boolean AS inserted;

-- name: CreativeList :many
-- CreativeList returns a principal's creatives, oldest first.
SELECT creative FROM seller_creatives WHERE principal_id = sqlc.arg('principal_id')
ORDER BY created_at, creative_id;

-- name: DeliveryAdd :exec
-- DeliveryAdd adds delivery to a package of a principal's media buy on a
-- day.
INSERT INTO seller_deliveries (principal_id, media_buy_id, package_id, day, impressions, clicks, conversions, spend)
VALUES (sqlc.arg('principal_id'), sqlc.arg('media_buy_id'), sqlc.arg('package_id'), sqlc.arg('day'),
        sqlc.arg('impressions'), sqlc.arg('clicks'), sqlc.arg('conversions'), sqlc.arg('spend'))
ON CONFLICT (principal_id, media_buy_id, package_id, day) DO UPDATE
SET impressions = seller_deliveries.impressions + EXCLUDED.impressions,
    clicks = seller_deliveries.clicks + EXCLUDED.clicks,
    conversions = seller_deliveries.conversions + EXCLUDED.conversions,
    spend = seller_deliveries.spend + EXCLUDED.spend;

-- name: DeliveryList :many
-- DeliveryList returns the delivery of a principal's media buys named, by
-- media buy, package and day.
SELECT media_buy_id, package_id, day, impressions, clicks, conversions, spend
FROM seller_deliveries
WHERE principal_id = sqlc.arg('principal_id') AND media_buy_id = ANY (sqlc.arg('ids')::text[])
ORDER BY media_buy_id, package_id, day;
