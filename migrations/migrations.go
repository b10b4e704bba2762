// Package migrations holds the SQL migrations that create the idempotency
// table, and applies them.
//
// The files are plain goose migrations, so the goose command works on the
// folder as it is:
//
//	goose -dir migrations postgres "$DATABASE_URL" up
//
// From Go, [Up] applies them with a library-owned version table
// ([VersionTable]), so they never mix with the host application's own goose
// history, and under a Postgres advisory lock, so replicas that start together
// migrate one at a time.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

// FS holds the migration files (*.sql) at its root.
//
//go:embed *.sql
var FS embed.FS

// VersionTable is the table in which [Up] records the applied versions. It
// differs from goose's default (goose_db_version) so that the host
// application's migrations and these never share a history.
const VersionTable = "adcp_idempotency_db_version"

// LockID is the Postgres advisory lock key that [Up] holds while it migrates.
// It differs from goose's default so that it never waits on the host
// application's own migrations.
const LockID int64 = 0x616463705f69646d // "adcp_idm"

// NewProvider returns a goose provider over [FS] for db, using [VersionTable]
// and a session advisory lock on [LockID] (tried every second, for up to five
// minutes). Use it for anything beyond [Up]: status,
// down, a specific version.
func NewProvider(db *sql.DB) (*goose.Provider, error) {
	if db == nil {
		return nil, errors.New("migrations: nil *sql.DB")
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(LockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("migrations: session locker: %w", err)
	}
	store, err := database.NewStore(database.DialectPostgres, VersionTable)
	if err != nil {
		return nil, fmt.Errorf("migrations: version store: %w", err)
	}
	p, err := goose.NewProvider("", db, FS,
		goose.WithStore(store),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// Up applies every pending migration to db and returns how many it applied.
// It is safe to call from several processes at once: they take turns on an
// advisory lock, and all but the first find nothing to do.
//
// db must be a Postgres *sql.DB; with pgx, open one with the pgx stdlib
// driver (import _ "github.com/jackc/pgx/v5/stdlib"; sql.Open("pgx", url)).
func Up(ctx context.Context, db *sql.DB) (int, error) {
	p, err := NewProvider(db)
	if err != nil {
		return 0, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return len(results), fmt.Errorf("migrations: up: %w", err)
	}
	return len(results), nil
}
