package migrations_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/adcp-go/idempotency/migrations"
)

// Apply the idempotency table's migrations at start-up, from the
// application's own pool. Replicas that start together take turns on an
// advisory lock; the history goes to adcp_idempotency_db_version.
func ExampleUp() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/seller")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	applied, err := migrations.Up(ctx, db)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("applied %d idempotency migrations", applied)
}
