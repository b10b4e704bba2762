package integration

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
)

// TestSellerAccountsMigration: the seller's migration 00004 gives
// accounts a table of their own and carries over the accounts media buys
// were made under before it, each once, listed oldest first.
func TestSellerAccountsMigration(t *testing.T) {
	ctx := context.Background()
	pool := newSchema(t)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	store, err := database.NewStore(database.DialectPostgres, "adcp_seller_db_version")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider("", db, os.DirFS("../cmd/adcp-seller/seller/schema"), goose.WithStore(store), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 3); err != nil {
		t.Fatalf("seller migrations up to 3: %v", err)
	}
	// Two principals; p1 bought under acc_b first, then twice under acc_a.
	for _, b := range []struct{ id, principal, account, at string }{
		{"mb1", "p1", "acc_b", "2026-01-01T00:00:00Z"},
		{"mb2", "p1", "acc_a", "2026-01-02T00:00:00Z"},
		{"mb3", "p1", "acc_a", "2026-01-03T00:00:00Z"},
		{"mb4", "p2", "acc_a", "2026-01-01T12:00:00Z"},
	} {
		acct, _ := json.Marshal(map[string]any{"account_id": b.account, "name": b.account, "status": "active"})
		if _, err := pool.Exec(ctx, `INSERT INTO seller_media_buys (media_buy_id, principal_id, account_id, account, status, currency, total_budget,
			start_time, end_time, packages, created_at, confirmed_at) VALUES ($1, $2, $3, $4, 'active', 'USD', 10, 'asap', '2099-01-01T00:00:00Z', '[]', $5, $5)`,
			b.id, b.principal, b.account, acct, b.at); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("seller migrations up: %v", err)
	}
	listed := func(principal string) []string {
		rows, err := pool.Query(ctx, `SELECT account_id FROM seller_accounts WHERE principal_id = $1 ORDER BY seq`, principal)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := listed("p1"); !slices.Equal(got, []string{"acc_b", "acc_a"}) {
		t.Fatalf("p1's accounts after the migration: %v, want [acc_b acc_a] (each once, oldest first)", got)
	}
	if got := listed("p2"); !slices.Equal(got, []string{"acc_a"}) {
		t.Fatalf("p2's accounts after the migration: %v, want [acc_a]", got)
	}
	// An account added after the migration lists after the carried-over ones.
	if _, err := pool.Exec(ctx, `INSERT INTO seller_accounts (principal_id, account_id, account) VALUES ('p1', 'acc_0', '{}')`); err != nil {
		t.Fatal(err)
	}
	if got := listed("p1"); !slices.Equal(got, []string{"acc_b", "acc_a", "acc_0"}) {
		t.Fatalf("p1's accounts after a new one: %v, want [acc_b acc_a acc_0]", got)
	}
}
