package memstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/adcp-go/idempotency/idemtest"
	"github.com/adcp-go/idempotency/memstore"
)

func TestConformance(t *testing.T) {
	idemtest.Run(t, func(t *testing.T) idemtest.Harness {
		s := memstore.New(nil)
		t.Cleanup(func() { _ = s.Close() })
		return idemtest.Harness{Backend: s}
	})
}

func TestSweeperDeletesAndCloseStopsIt(t *testing.T) {
	s := memstore.New(&memstore.Options{SweepInterval: time.Millisecond})
	ctx := context.Background()
	ref := backend.Ref{Principal: "alice", Key: "key-0000000000000001"}
	// Written three hours ago: its retention ended an hour ago by the
	// process clock, which the background sweeper reads.
	then := time.Now().Add(-3 * time.Hour)
	if held, err := s.Claim(ctx, backend.Claim{Ref: ref, Owner: "o", Lease: time.Minute, Retention: time.Hour, At: then}); held != nil || err != nil {
		t.Fatal(held, err)
	}
	if err := s.Complete(ctx, backend.Completion{Ref: ref, Owner: "o", Response: []byte(`1`), TTL: time.Hour, Retention: time.Hour, At: then}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not delete an entry past its retention")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}
