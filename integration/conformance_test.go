package integration

import (
	"testing"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemtest"
)

// The shared outcome suite against Postgres: PostgresBackend (the backend
// steps and idem.Do), and idem.RunInTx, on the same table.
func TestPostgresBackendConformance(t *testing.T) {
	t.Parallel()
	idemtest.Run(t, func(t *testing.T) idemtest.Harness {
		return idemtest.Harness{Backend: &idem.PostgresBackend{DB: newSchema(t)}}
	})
}

func TestRunInTxOutcomes(t *testing.T) {
	t.Parallel()
	idemtest.Run(t, func(t *testing.T) idemtest.Harness {
		return idemtest.Harness{Tx: &idemtest.TxHarness{DB: newSchema(t)}}
	})
}

// TestRunInTxOutcomesPreRead is TestRunInTxOutcomes with
// Config.ReplayPreRead: replays, conflicts, expiry, tombstones, failures and
// concurrent duplicates give the same outcomes with the pre-read in front of
// the claim.
func TestRunInTxOutcomesPreRead(t *testing.T) {
	t.Parallel()
	idemtest.Run(t, func(t *testing.T) idemtest.Harness {
		return idemtest.Harness{Tx: &idemtest.TxHarness{DB: newSchema(t), ReplayPreRead: true}}
	})
}
