package integration

import (
	"testing"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemtest"
)

// The shared backend conformance suite against Postgres (PostgresBackend,
// which uses the same table as RunInTx).
func TestPostgresBackendConformance(t *testing.T) {
	t.Parallel()
	idemtest.Run(t, func(t *testing.T) idemtest.Harness {
		return idemtest.Harness{Backend: &idem.PostgresBackend{DB: newSchema(t)}}
	})
}
