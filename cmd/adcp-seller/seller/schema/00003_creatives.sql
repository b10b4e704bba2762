-- +goose Up
-- The creative library list_creatives lists: one row per creative of a
-- principal. This seller takes no creatives from buyers (no
-- sync_creatives); comply_test_controller's seed_creative adds them.
CREATE TABLE seller_creatives (
    principal_id text        NOT NULL,
    creative_id  text        NOT NULL,
    creative     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_id, creative_id)
);

-- +goose Down
DROP TABLE seller_creatives;
