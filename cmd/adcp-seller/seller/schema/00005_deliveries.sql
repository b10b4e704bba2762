-- +goose Up
-- Delivery of media buys, as get_media_buy_delivery reports it: one row
-- per media buy, package and UTC day, added to by comply_test_controller's
-- simulate_delivery (this seller serves no ads; the sandbox controller is
-- the only source of delivery). package_id is '' for delivery of a media
-- buy without packages.
CREATE TABLE seller_deliveries (
    principal_id text             NOT NULL,
    media_buy_id text             NOT NULL REFERENCES seller_media_buys (media_buy_id),
    package_id   text             NOT NULL,
    day          text             NOT NULL, -- YYYY-MM-DD, UTC
    impressions  bigint           NOT NULL,
    clicks       bigint           NOT NULL,
    conversions  double precision NOT NULL,
    spend        double precision NOT NULL,
    PRIMARY KEY (principal_id, media_buy_id, package_id, day)
);

-- +goose Down
DROP TABLE seller_deliveries;
