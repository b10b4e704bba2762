//go:build !race

package adcp

import (
	"encoding/json"
	"testing"
)

// ParseArguments allocates nothing for an object with plain member names,
// nor hasMember. The file builds without -race only (the race detector's
// instrumentation allocates); `make unit` runs it in a plain `go test`.
func TestParseArgumentsAllocations(t *testing.T) {
	raw := json.RawMessage(`{"idempotency_key":"0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50","context":{"id":"a"},"account":{"brand":{"domain":"acme.example"},"operator":"acme.example"},"packages":[{"product_id":"p","budget":100}]}`)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ParseArguments(raw); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("ParseArguments: %v allocations, want 0", n)
	}
	body := json.RawMessage(`{"media_buy_id":"mb_1","packages":[{"status":"active"}],"status":"active"}`)
	if n := testing.AllocsPerRun(100, func() { _ = hasMember(body, "status") }); n != 0 {
		t.Fatalf("hasMember: %v allocations, want 0", n)
	}
}
