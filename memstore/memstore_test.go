package memstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idemtest"
	"github.com/adcp-go/idempotency/memstore"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestConformance(t *testing.T) {
	idemtest.Run(t, func(t *testing.T) idemtest.Harness {
		c := &clock{t: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
		s := memstore.New(&memstore.Options{Now: c.Now})
		t.Cleanup(func() { _ = s.Close() })
		return idemtest.Harness{Backend: s, Advance: c.Advance}
	})
}

func TestSweeperDeletesAndCloseStopsIt(t *testing.T) {
	c := &clock{t: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
	s := memstore.New(&memstore.Options{Now: c.Now, SweepInterval: time.Millisecond})
	ctx := context.Background()
	ref := idem.Ref{Principal: "alice", Key: "key-0000000000000001"}
	if held, err := s.Claim(ctx, idem.Claim{Ref: ref, Owner: "o", Lease: time.Minute, Retention: time.Hour}); held != nil || err != nil {
		t.Fatal(held, err)
	}
	if err := s.Complete(ctx, idem.Completion{Ref: ref, Owner: "o", Response: []byte(`1`), TTL: time.Hour, Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	c.Advance(2*time.Hour + time.Second)
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
