-- +goose Up
-- Leave room on each page so that storing a response (an UPDATE of a row
-- just inserted, which touches no indexed column) can stay on the row's page
-- as a HOT update: no new index entries, less WAL.
ALTER TABLE idempotency_keys SET (fillfactor = 90);

-- +goose Down
ALTER TABLE idempotency_keys RESET (fillfactor);
