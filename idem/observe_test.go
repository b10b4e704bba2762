package idem_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

func TestObserveReportsEveryOutcome(t *testing.T) {
	var mu sync.Mutex
	var seen []idem.Outcome
	store := memstore.New(nil)
	defer store.Close()
	g, err := idem.NewGuard(store, &idem.Config{
		Limiter: idem.NewLimiter(0.0001, 3), // three new keys, failed ones included
		Observe: func(_ context.Context, o idem.Observation) {
			if o.Operation != "create_media_buy" || o.Duration < 0 {
				t.Errorf("observation %+v", o)
			}
			mu.Lock()
			seen = append(seen, o.Outcome)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok := func(context.Context) (int, error) { return 1, nil }
	r := func(key, payload string) idem.Request {
		return idem.Request{Principal: "p", Key: key, Operation: "create_media_buy", Payload: []byte(payload)}
	}
	_, _ = idem.Do(ctx, g, r("key-observe-00000001", `{}`), ok)                                                                // executed
	_, _ = idem.Do(ctx, g, r("key-observe-00000001", `{}`), ok)                                                                // replayed
	_, _ = idem.Do(ctx, g, r("key-observe-00000001", `{"x":1}`), ok)                                                           // conflict
	_, _ = idem.Do(ctx, g, r("short", `{}`), ok)                                                                               // invalid
	_, _ = idem.Do(ctx, g, r("key-observe-00000002", `{}`), func(context.Context) (int, error) { return 0, errors.New("no") }) // handler_error
	func() {
		defer func() { _ = recover() }()
		_, _ = idem.Do(ctx, g, r("key-observe-00000003", `{}`), func(context.Context) (int, error) { panic("bug") }) // handler_error
	}()
	_, _ = idem.Do(ctx, g, r("key-observe-00000004", `{}`), ok) // rate_limited (burst of 3 spent)
	want := []idem.Outcome{idem.OutcomeExecuted, idem.OutcomeReplayed, idem.OutcomeConflict, idem.OutcomeInvalid,
		idem.OutcomeHandlerError, idem.OutcomeHandlerError, idem.OutcomeRateLimited}
	if len(seen) != len(want) {
		t.Fatalf("outcomes %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("outcomes %v, want %v", seen, want)
		}
	}
}
