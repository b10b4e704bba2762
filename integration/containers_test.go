package integration

import (
	"context"
	"fmt"
	"log"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// The one place containers start: the shared Postgres and Redis of TestMain
// and the servers of tests that stop, pause or reconfigure theirs. Images
// come from IDEM_TEST_POSTGRES_IMAGE and IDEM_TEST_REDIS_IMAGE (see
// ../shared/testenv), defaulting to the official ones.

func postgresImage() string { return envOr("IDEM_TEST_POSTGRES_IMAGE", "postgres:17-alpine") }

func redisImage() string { return envOr("IDEM_TEST_REDIS_IMAGE", "redis:7-alpine") }

// stopContainer terminates c; it is safe when the start failed half way.
func stopContainer(c testcontainers.Container, what string) {
	if c == nil {
		return
	}
	if err := testcontainers.TerminateContainer(c); err != nil {
		log.Printf("integration: terminating %s: %v", what, err)
	}
}

// runPostgres starts a Postgres container (database, user and password
// "idem") and returns it with its URL. The caller stops it with
// stopContainer, also when err is not nil.
func runPostgres(ctx context.Context) (*tcpostgres.PostgresContainer, string, error) {
	start := time.Now()
	c, err := tcpostgres.Run(ctx, postgresImage(),
		tcpostgres.WithDatabase("idem"), tcpostgres.WithUsername("idem"), tcpostgres.WithPassword("idem"),
		tcpostgres.BasicWaitStrategies())
	if err != nil {
		return c, "", fmt.Errorf("starting %s: %w", postgresImage(), err)
	}
	url, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		return c, "", err
	}
	log.Printf("integration: Postgres container %s (%s) ready in %v", c.GetContainerID()[:12], postgresImage(), time.Since(start).Round(time.Millisecond))
	return c, url, nil
}

// runRedis starts a Redis container and returns it with its URL. The caller
// stops it with stopContainer, also when err is not nil.
func runRedis(ctx context.Context) (*tcredis.RedisContainer, string, error) {
	start := time.Now()
	c, err := tcredis.Run(ctx, redisImage())
	if err != nil {
		return c, "", fmt.Errorf("starting %s: %w", redisImage(), err)
	}
	url, err := c.ConnectionString(ctx)
	if err != nil {
		return c, "", err
	}
	log.Printf("integration: Redis container %s (%s) ready in %v", c.GetContainerID()[:12], redisImage(), time.Since(start).Round(time.Millisecond))
	return c, url, nil
}

// scratchPostgres starts a Postgres of t's own, for tests that stop or
// crash it, and terminates it when t ends.
func scratchPostgres(t *testing.T) (*tcpostgres.PostgresContainer, string) {
	t.Helper()
	c, url, err := runPostgres(context.Background())
	t.Cleanup(func() { stopContainer(c, "a test's Postgres") })
	if err != nil {
		t.Fatal(err)
	}
	return c, url
}

// scratchRedis starts a Redis of t's own, for tests that pause it or change
// its configuration, and terminates it when t ends.
func scratchRedis(t *testing.T) (*tcredis.RedisContainer, string) {
	t.Helper()
	needRedis(t)
	c, url, err := runRedis(context.Background())
	t.Cleanup(func() { stopContainer(c, "a test's Redis") })
	if err != nil {
		t.Fatal(err)
	}
	return c, url
}
