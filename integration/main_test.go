package integration

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"log"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/adcp-go/idempotency/migrations"
)

// databaseURL is the server every test uses; each test gets a schema of its
// own in it (see newSchema).
var databaseURL string

func TestMain(m *testing.M) {
	if child := os.Getenv(childEnv); child != "" {
		runChild(child) // a crash-test child process: never returns
	}
	if spec := os.Getenv(chaosChildEnv); spec != "" {
		runChaosChild(spec) // a crash-matrix child process (crash_test.go): never returns
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	url, stop, err := startPostgres(ctx)
	if stop != nil {
		defer stop()
	}
	if err != nil {
		if os.Getenv("IDEM_REQUIRE_DOCKER") == "1" {
			log.Printf("integration: FAIL: no Postgres (IDEM_REQUIRE_DOCKER=1): %v", err)
			return 1
		}
		log.Printf("integration: SKIP: no Postgres (set TEST_DATABASE_URL, or run Docker): %v", err)
		return 0
	}
	databaseURL = url
	rurl, rstop, err := startRedis(ctx) // redis_test.go
	if rstop != nil {
		defer rstop()
	}
	if err != nil {
		if os.Getenv("IDEM_REQUIRE_DOCKER") == "1" {
			log.Printf("integration: FAIL: no Redis (IDEM_REQUIRE_DOCKER=1): %v", err)
			return 1
		}
		log.Printf("integration: SKIP: the Redis tests, no Redis (run Docker): %v", err)
	}
	redisURL = rurl
	return m.Run()
}

func startPostgres(ctx context.Context) (string, func(), error) {
	if url := os.Getenv("TEST_DATABASE_URL"); url != "" {
		log.Printf("integration: using TEST_DATABASE_URL")
		return url, nil, nil
	}
	c, url, err := runPostgres(ctx)
	postgresContainer = c
	return url, func() { stopContainer(c, "Postgres") }, err
}

// postgresContainer is set when the tests started their own server, so that
// fault tests can stop and start it.
var postgresContainer *tcpostgres.PostgresContainer

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newSchema creates a schema of its own for t, applies the migrations in it
// and returns a pool whose connections use it, so tests can run in parallel
// and sweep or count rows without seeing each other's.
func newSchema(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	schema := "t_" + randomID(6)
	admin, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), databaseURL)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			_ = c.Close(context.Background())
		}
	})
	url := withSearchPath(databaseURL, schema)
	sqlDB := openSQL(t, url)
	defer sqlDB.Close()
	if _, err := migrations.Up(ctx, sqlDB); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 40
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `CREATE TABLE media_buys (
		id bigserial PRIMARY KEY, principal text NOT NULL, budget int NOT NULL)`); err != nil {
		t.Fatalf("create business table: %v", err)
	}
	return pool
}

func withSearchPath(url, schema string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "search_path=" + schema
}

func openSQL(t testing.TB, url string) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return stdlib.OpenDB(*cfg)
}
