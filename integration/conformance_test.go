package integration

import (
	"testing"
	"time"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemtest"
)

// The shared backend conformance suite against Postgres (PostgresBackend,
// which uses the same table as RunInTx).
func TestPostgresBackendConformance(t *testing.T) {
	t.Parallel()
	idemtest.Run(t, func(t *testing.T) idemtest.Harness {
		pool := newSchema(t)
		clock := &fakeClock{t: time.Now().UTC()}
		return idemtest.Harness{Backend: &idem.PostgresBackend{DB: pool, Now: clock.Now}, Advance: clock.Add}
	})
}
