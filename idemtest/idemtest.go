// Package idemtest is the outcome suite of this library: every backend of
// it passes it, and so does idem.RunInTx. Run it against your own
// backend.Backend:
//
//	func TestConformance(t *testing.T) {
//		idemtest.Run(t, func(t *testing.T) idemtest.Harness {
//			b := mybackend.New(...)
//			t.Cleanup(func() { b.Close() })
//			return idemtest.Harness{Backend: b}
//		})
//	}
//
// For a backend it checks the atomic steps (claim, renew, complete,
// release, get, sweep), ownership (a request whose lease ran out can
// neither complete nor release the new owner's claim), lease takeover, TTL,
// tombstones, principal isolation and concurrency (64 goroutines, one key,
// one claim), and then every outcome end to end through idem.Do on a Guard
// over it. With Harness.Tx instead, it checks the same outcomes through
// idem.RunInTx on Postgres, where the handler's work commits with the
// answer (the suite records each run in a table of its own, idemtest_work,
// through the handler's transaction, and counts what committed).
//
// The suite never sleeps through a lease or a TTL: it keeps a clock of its
// own, passes it to the backend in every call (the At fields) and to the
// Guard or Store as idem.Config.Now, and moves it. A backend must judge
// every call by At when it is set.
package idemtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/jackc/pgx/v5"
)

// Harness is what the suite runs against: a Backend, or RunInTx on a
// Postgres database (Tx). Set exactly one.
type Harness struct {
	// Backend is a fresh, empty backend, or one whose keys no other test
	// uses.
	Backend backend.Backend
	// Tx runs the outcome tests through idem.RunInTx instead.
	Tx *TxHarness
}

// TxHarness is a Postgres database for the RunInTx outcome tests.
type TxHarness struct {
	// DB is a pool (or connection) on a schema with the library's table
	// (package migrations), where the suite may create its own table.
	DB idem.DB
	// ReplayPreRead runs RunInTx with Config.ReplayPreRead, so that every
	// outcome is checked with the pre-read in front of the claim too.
	ReplayPreRead bool
}

// suite is a Harness with the suite's clock.
type suite struct {
	Harness
	clock *Clock
}

// Advance moves the suite's clock forward by d.
func (h suite) Advance(d time.Duration) { h.clock.Advance(d) }

// at is the instant to pass to the backend.
func (h suite) at() time.Time { return h.clock.Now() }

// Run runs the suite. newHarness is called once per subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	setup := func(t *testing.T) suite {
		h := newHarness(t)
		if (h.Backend == nil) == (h.Tx == nil) {
			t.Fatal("idemtest: Harness needs a Backend or a Tx, not both")
		}
		if h.Tx != nil {
			if _, err := h.Tx.DB.Exec(context.Background(), `CREATE TABLE IF NOT EXISTS idemtest_work (
				principal_id text NOT NULL, key text NOT NULL, run bigint NOT NULL)`); err != nil {
				t.Fatalf("idemtest: creating idemtest_work: %v", err)
			}
		}
		return suite{Harness: h, clock: NewClock(time.Now())}
	}
	// Each test runs on a backend (backend), through idem.Do (guard), or
	// through either idem.Do or idem.RunInTx (both).
	const (
		onBackend = iota
		onGuard
		onBoth
	)
	probe := newHarness(t)
	transactional := probe.Tx != nil
	for _, tc := range []struct {
		name  string
		where int
		fn    func(*testing.T, suite)
	}{
		{"Backend/ClaimGetComplete", onBackend, testClaimGetComplete},
		{"Backend/Ownership", onBackend, testOwnership},
		{"Backend/LeaseTakeover", onBackend, testLeaseTakeover},
		{"Backend/Renew", onBackend, testRenew},
		{"Backend/TTLAndTombstone", onBackend, testTTLAndTombstone},
		{"Backend/Sweep", onBackend, testSweep},
		{"Backend/PrincipalIsolation", onBackend, testBackendIsolation},
		{"Backend/ConcurrentClaims", onBackend, testConcurrentClaims},
		{"Outcome/FirstCallReplayConflict", onBoth, testOutcomes},
		{"Outcome/InvalidRequestsStoreNothing", onBoth, testInvalidRequests},
		{"Outcome/ExpiredThenReusable", onBoth, testExpiry},
		{"Outcome/HandlerFailureStoresNothing", onBoth, testFailure},
		{"Outcome/CallerLeavesAfterTheWork", onBoth, testCancelledAfterWork},
		{"Outcome/ConcurrentDuplicatesRunOnce", onBoth, testConcurrent},
		{"Outcome/InFlightPolicies", onBoth, testInFlight},
		{"Outcome/RateLimit", onBoth, testRateLimit},
		{"Outcome/PrincipalIsolation", onBoth, testIsolation},
		{"Outcome/UnencodableAnswer", onBoth, testUnencodable},
		{"Outcome/EndedContextRunsNothing", onBoth, testEndedContext},
		{"Outcome/MalformedOperationStoresNothing", onBoth, testMalformedOperation},
		{"Outcome/UndecodableStoredAnswer", onBoth, testUndecodable},
		{"Outcome/InFlightBoundEndsTheHandler", onBoth, testInFlightBound},
		{"Outcome/RetentionCountsFromTheFirstRequest", onBoth, testRetentionFromClaim},
		{"Outcome/AccountScope", onBoth, testAccountScope},
		{"Outcome/ReadAndWriteBudgets", onBoth, testBudgets},
		{"Outcome/EncryptedAtRest", onBoth, testEncryptedAtRest},
		{"Guard/LeaseTakeover", onGuard, testLeaseTakeoverThroughDo},
		{"Guard/DeadOwnerReleasedWithinTheBound", onGuard, testDeadOwnerBound},
		{"Guard/SlowHandlerKeepsItsLease", onGuard, testSlowHandler},
	} {
		if transactional && tc.where != onBoth {
			continue // backend and lease tests: RunInTx has neither
		}
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, setup(t)) })
	}
}

// Durations of the suite; the clock is moved, never waited on.
const (
	lease     = 2 * time.Minute
	ttl       = time.Hour
	retention = 24 * time.Hour
	skew      = time.Minute
)

var keyCounter atomic.Int64

// newKey returns a key unique to this process run, so that backends that
// share storage between subtests still see fresh keys.
func newKey() string {
	return fmt.Sprintf("idemtest-%d-%06d", time.Now().UnixNano(), keyCounter.Add(1))
}

func hashOf(t *testing.T, payload string) backend.Hash {
	t.Helper()
	h, err := idem.CanonicalJSONSHA256([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h suite) claim(t *testing.T, ref backend.Ref, owner string) backend.Claim {
	return backend.Claim{Ref: ref, Operation: "create_media_buy", Hash: hashOf(t, `{"a":1}`), Owner: owner, Lease: lease, Retention: retention, At: h.at()}
}

func (h suite) completion(ref backend.Ref, owner, response string) backend.Completion {
	return backend.Completion{Ref: ref, Owner: owner, Response: []byte(response), TTL: ttl, Retention: retention, At: h.at()}
}

func mustClaim(t *testing.T, h suite, c backend.Claim) {
	t.Helper()
	held, err := h.Backend.Claim(context.Background(), c)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if held != nil {
		t.Fatalf("Claim of a free key returned a holder %+v", held)
	}
}

func mustGet(t *testing.T, h suite, ref backend.Ref) *backend.Entry {
	t.Helper()
	e, err := h.Backend.Get(context.Background(), ref, h.at())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return e
}

func testClaimGetComplete(t *testing.T, h suite) {
	ctx := context.Background()
	ref := backend.Ref{Principal: "alice", Key: newKey()}
	if e := mustGet(t, h, ref); e != nil {
		t.Fatalf("Get of an unknown key = %+v, want nil", e)
	}
	c := h.claim(t, ref, "owner-1")
	mustClaim(t, h, c)

	e := mustGet(t, h, ref)
	if e == nil || e.Response != nil || e.Operation != c.Operation || e.Hash != c.Hash {
		t.Fatalf("Get after Claim = %+v, want the in-flight entry", e)
	}
	if d := e.ExpiresAt.Sub(e.Now); d <= 0 || d > lease {
		t.Fatalf("in-flight ExpiresAt is %v after Now, want within the %v lease", d, lease)
	}
	held, err := h.Backend.Claim(ctx, h.claim(t, ref, "owner-2"))
	if err != nil || held == nil || held.Response != nil {
		t.Fatalf("second Claim = %+v, %v; want the in-flight holder", held, err)
	}

	if err := h.Backend.Complete(ctx, h.completion(ref, "owner-1", `{"media_buy_id":"mb_1"}`)); err != nil {
		t.Fatalf("Complete by the owner: %v", err)
	}
	e = mustGet(t, h, ref)
	if e == nil || string(e.Response) != `{"media_buy_id":"mb_1"}` {
		t.Fatalf("Get after Complete = %+v, want the stored response", e)
	}
	if d := e.ExpiresAt.Sub(e.Now); d <= ttl-time.Minute || d > ttl {
		t.Fatalf("completed ExpiresAt is %v after Now, want the %v TTL", d, ttl)
	}
	held, err = h.Backend.Claim(ctx, h.claim(t, ref, "owner-3"))
	if err != nil || held == nil || string(held.Response) != `{"media_buy_id":"mb_1"}` {
		t.Fatalf("Claim of a completed key = %+v, %v; want the completed entry", held, err)
	}
}

func testOwnership(t *testing.T, h suite) {
	ctx := context.Background()
	ref := backend.Ref{Principal: "alice", Key: newKey()}
	mustClaim(t, h, h.claim(t, ref, "owner-1"))

	if err := h.Backend.Complete(ctx, h.completion(ref, "intruder", `"stolen"`)); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Complete by a non-owner: %v, want ErrNotOwner", err)
	}
	if err := h.Backend.Release(ctx, ref, "intruder"); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Release by a non-owner: %v, want ErrNotOwner", err)
	}
	if e := mustGet(t, h, ref); e == nil || e.Response != nil {
		t.Fatalf("after a non-owner's attempts: %+v, want the untouched in-flight entry", e)
	}
	if err := h.Backend.Release(ctx, ref, "owner-1"); err != nil {
		t.Fatalf("Release by the owner: %v", err)
	}
	if e := mustGet(t, h, ref); e != nil {
		t.Fatalf("after Release: %+v, want no entry", e)
	}
	if err := h.Backend.Complete(ctx, h.completion(ref, "owner-1", `1`)); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Complete after Release: %v, want ErrNotOwner", err)
	}
	if err := h.Backend.Release(ctx, ref, "owner-1"); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("second Release: %v, want ErrNotOwner", err)
	}

	// A completed entry can be neither completed again nor released.
	mustClaim(t, h, h.claim(t, ref, "owner-2"))
	if err := h.Backend.Complete(ctx, h.completion(ref, "owner-2", `"first"`)); err != nil {
		t.Fatal(err)
	}
	if err := h.Backend.Complete(ctx, h.completion(ref, "owner-2", `"second"`)); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("second Complete: %v, want ErrNotOwner", err)
	}
	if err := h.Backend.Release(ctx, ref, "owner-2"); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Release of a completed entry: %v, want ErrNotOwner", err)
	}
	if e := mustGet(t, h, ref); e == nil || string(e.Response) != `"first"` {
		t.Fatalf("completed entry = %+v, want the first response kept", e)
	}
}

func testLeaseTakeover(t *testing.T, h suite) {
	ctx := context.Background()
	ref := backend.Ref{Principal: "alice", Key: newKey()}
	mustClaim(t, h, h.claim(t, ref, "crashed"))

	h.Advance(lease - time.Second)
	if held, err := h.Backend.Claim(ctx, h.claim(t, ref, "early")); err != nil || held == nil {
		t.Fatalf("Claim within the lease = %+v, %v; want the holder", held, err)
	}
	h.Advance(2 * time.Second)
	mustClaim(t, h, h.claim(t, ref, "successor"))

	// The stale owner can no longer touch the key.
	if err := h.Backend.Complete(ctx, h.completion(ref, "crashed", `"stale"`)); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Complete by the stale owner: %v, want ErrNotOwner", err)
	}
	if err := h.Backend.Release(ctx, ref, "crashed"); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Release by the stale owner: %v, want ErrNotOwner", err)
	}
	if err := h.Backend.Complete(ctx, h.completion(ref, "successor", `"fresh"`)); err != nil {
		t.Fatalf("Complete by the successor: %v", err)
	}
	if e := mustGet(t, h, ref); e == nil || string(e.Response) != `"fresh"` {
		t.Fatalf("entry = %+v, want the successor's response", e)
	}
}

func testTTLAndTombstone(t *testing.T, h suite) {
	ctx := context.Background()
	ref := backend.Ref{Principal: "alice", Key: newKey()}
	mustClaim(t, h, h.claim(t, ref, "owner"))
	if err := h.Backend.Complete(ctx, h.completion(ref, "owner", `"answer"`)); err != nil {
		t.Fatal(err)
	}
	h.Advance(ttl + skew + time.Second) // past the replay window: a tombstone
	e := mustGet(t, h, ref)
	if e == nil || !e.Now.After(e.ExpiresAt.Add(skew)) {
		t.Fatalf("entry past its TTL = %+v, want it kept with Now past ExpiresAt+skew", e)
	}
	if held, err := h.Backend.Claim(ctx, h.claim(t, ref, "retry")); err != nil || held == nil {
		t.Fatalf("Claim of a tombstone = %+v, %v; want the tombstone to hold the key", held, err)
	}
	h.Advance(retention) // past retention: the key is free
	mustClaim(t, h, h.claim(t, ref, "much-later"))
}

func testSweep(t *testing.T, h suite) {
	ctx := context.Background()
	old := make([]backend.Ref, 5)
	for i := range old {
		old[i] = backend.Ref{Principal: "alice", Key: newKey()}
		mustClaim(t, h, h.claim(t, old[i], "o"))
		if err := h.Backend.Complete(ctx, h.completion(old[i], "o", `1`)); err != nil {
			t.Fatal(err)
		}
	}
	h.Advance(ttl + retention + time.Second)
	fresh := backend.Ref{Principal: "alice", Key: newKey()}
	mustClaim(t, h, h.claim(t, fresh, "o"))
	if err := h.Backend.Complete(ctx, h.completion(fresh, "o", `2`)); err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for range 10 {
		n, err := h.Backend.Sweep(ctx, backend.SweepRequest{Retention: retention, Limit: 2, At: h.at()})
		if err != nil {
			t.Fatalf("Sweep: %v", err)
		}
		if n > 2 {
			t.Fatalf("Sweep with limit 2 deleted %d", n)
		}
		deleted += n
		if n == 0 {
			break
		}
	}
	// Backends that expire entries by themselves may have nothing left to
	// sweep; either way the old entries are gone and the fresh one stays.
	for _, ref := range old {
		if e := mustGet(t, h, ref); e != nil {
			t.Fatalf("entry past retention still there after Sweep (deleted %d): %+v", deleted, e)
		}
	}
	if e := mustGet(t, h, fresh); e == nil {
		t.Fatal("Sweep deleted an entry within its TTL")
	}
}

func testBackendIsolation(t *testing.T, h suite) {
	key := newKey()
	mustClaim(t, h, h.claim(t, backend.Ref{Principal: "alice", Key: key}, "a"))
	mustClaim(t, h, h.claim(t, backend.Ref{Principal: "bob", Key: key}, "b"))
	// Principals that could collide if a backend joined the two strings
	// naively.
	mustClaim(t, h, h.claim(t, backend.Ref{Principal: "ali", Key: "ce:" + key}, "c"))
	if h.stored(t, backend.Ref{Principal: "carol", Key: key}) {
		t.Fatal("carol sees an entry under alice's key")
	}
}

func testConcurrentClaims(t *testing.T, h suite) {
	ref := backend.Ref{Principal: "alice", Key: newKey()}
	const n = 64
	var wg sync.WaitGroup
	var won, held, failed atomic.Int32
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			e, err := h.Backend.Claim(context.Background(), h.claim(t, ref, fmt.Sprint("owner-", i)))
			switch {
			case err != nil:
				failed.Add(1)
				t.Errorf("Claim: %v", err)
			case e == nil:
				won.Add(1)
			default:
				held.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 || held.Load() != n-1 {
		t.Fatalf("%d of %d concurrent claims won, %d saw a holder, %d failed; want exactly 1 winner", won.Load(), n, held.Load(), failed.Load())
	}
}

// Through idem.Do.

type answer struct {
	MediaBuyID string `json:"media_buy_id"`
	Run        int64  `json:"run"`
}

// caller is one configured path: a Guard (idem.Do) or a Store
// (idem.RunInTx).
type caller struct {
	g  *idem.Guard
	s  *idem.Store
	db idem.DB
}

// transactional reports whether the path commits the work with the answer.
func (h suite) transactional() bool { return h.Tx != nil }

// caller returns the path under test configured by cfg, on the suite's
// clock and durations.
func (h suite) caller(t *testing.T, cfg idem.Config) caller {
	t.Helper()
	cfg.TTL, cfg.TombstoneRetention = ttl, retention
	if cfg.InFlightMax == 0 {
		cfg.InFlightMax = lease
	}
	if cfg.Lease == 0 {
		cfg.Lease = min(lease, cfg.InFlightMax)
	}
	cfg.Now = h.clock.Now
	if cfg.Limiter == nil {
		cfg.Limiter = idem.Unlimited
	}
	if h.Tx != nil {
		cfg.ReplayPreRead = h.Tx.ReplayPreRead
		s, err := idem.NewStore(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		return caller{s: s, db: h.Tx.DB}
	}
	g, err := idem.NewGuard(h.Backend, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	return caller{g: g}
}

// call runs fn for r on c's path. Through RunInTx, a run that succeeds
// writes a row in idemtest_work through the handler's transaction, so that
// the suite can count what committed.
func call[T any](ctx context.Context, c caller, r idem.Request, fn func(context.Context) (T, error)) (idem.Result[T], error) {
	if c.g != nil {
		return idem.Do(ctx, c.g, r, fn)
	}
	return idem.RunInTx(ctx, c.s, c.db, r, func(ctx context.Context, tx pgx.Tx) (T, error) {
		v, err := fn(ctx)
		if err != nil {
			return v, err
		}
		_, err = tx.Exec(ctx, `INSERT INTO idemtest_work (principal_id, key, run) VALUES ($1, $2, 1)`, r.Principal, r.Key)
		return v, err
	})
}

// stored reports whether anything is stored under ref.
func (h suite) stored(t *testing.T, ref backend.Ref) bool {
	t.Helper()
	if h.Tx == nil {
		return mustGet(t, h, ref) != nil
	}
	var n int
	if err := h.Tx.DB.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys WHERE principal_id = $1 AND account_id = $2 AND key = $3`,
		ref.Principal, ref.Account, ref.Key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// storedResponse returns the bytes stored as ref's answer (nil while in
// flight or absent).
func (h suite) storedResponse(t *testing.T, ref backend.Ref) []byte {
	t.Helper()
	if h.Tx == nil {
		if e := mustGet(t, h, ref); e != nil {
			return e.Response
		}
		return nil
	}
	var resp []byte
	err := h.Tx.DB.QueryRow(context.Background(), `SELECT response FROM idempotency_keys WHERE principal_id = $1 AND account_id = $2 AND key = $3`,
		ref.Principal, ref.Account, ref.Key).Scan(&resp)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return resp
}

// committed reports how many runs for ref committed their work: for
// RunInTx, the rows in idemtest_work; on a backend, where nothing is rolled
// back, the number the caller counted.
func (h suite) committed(t *testing.T, ref backend.Ref, counted int64) int64 {
	t.Helper()
	if h.Tx == nil {
		return counted
	}
	var n int64
	if err := h.Tx.DB.QueryRow(context.Background(), `SELECT count(*) FROM idemtest_work WHERE principal_id = $1 AND key = $2`,
		ref.Principal, ref.Key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func req(principal, key, payload string) idem.Request {
	return idem.Request{Principal: principal, Key: key, Operation: "create_media_buy", Payload: json.RawMessage(payload)}
}

// counter is a handler that counts its runs.
type counter struct{ runs atomic.Int64 }

func (c *counter) handle(context.Context) (answer, error) {
	n := c.runs.Add(1)
	return answer{MediaBuyID: fmt.Sprint("mb_", n), Run: n}, nil
}

func testOutcomes(t *testing.T, h suite) {
	ctx := context.Background()
	g := h.caller(t, idem.Config{})
	var c counter
	key := newKey()
	first, err := call(ctx, g, req("alice", key, `{"budget":5000,"context":{"id":1}}`), c.handle)
	if err != nil || first.Replayed || first.Value.Run != 1 {
		t.Fatalf("first call = %+v, %v", first, err)
	}
	again, err := call(ctx, g, req("alice", key, `{"context":{"id":2},"budget":5000.0}`), c.handle)
	if err != nil || !again.Replayed || again.Value != first.Value || string(again.Response) != string(first.Response) {
		t.Fatalf("replay = %+v (%s), %v; want %+v (%s) replayed", again, again.Response, err, first, first.Response)
	}
	_, err = call(ctx, g, req("alice", key, `{"budget":25000}`), c.handle)
	if !errors.Is(err, idem.ErrConflict) {
		t.Fatalf("changed payload: %v, want ErrConflict", err)
	}
	other := req("alice", key, `{"budget":5000}`)
	other.Operation = "update_media_buy"
	if _, err := call(ctx, g, other, c.handle); !errors.Is(err, idem.ErrConflict) {
		t.Fatalf("another operation: %v, want ErrConflict", err)
	}
	if _, err := call(ctx, g, req("alice", "short", `{}`), c.handle); !errors.Is(err, idem.ErrInvalidKey) {
		t.Fatalf("malformed key: %v, want ErrInvalidKey", err)
	}
	if _, err := call(ctx, g, req("", newKey(), `{}`), c.handle); !errors.Is(err, idem.ErrMissingPrincipal) {
		t.Fatalf("no principal: %v, want ErrMissingPrincipal", err)
	}
	if n := c.runs.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
	if n := h.committed(t, backend.Ref{Principal: "alice", Key: key}, 1); n != 1 {
		t.Fatalf("%d runs committed, want 1", n)
	}
}

// Requests that fail validation never reach the handler or the storage.
func testInvalidRequests(t *testing.T, h suite) {
	ctx := context.Background()
	cfg := idem.Config{MaxPayloadBytes: 64}
	g := h.caller(t, cfg)
	var c counter
	noOperation := req("alice", newKey(), `{}`)
	noOperation.Operation = ""
	for name, tc := range map[string]struct {
		r    idem.Request
		want error
	}{
		"no principal":    {req("", newKey(), `{}`), idem.ErrMissingPrincipal},
		"no key":          {req("alice", "", `{}`), idem.ErrMissingKey},
		"short key":       {req("alice", "too-short", `{}`), idem.ErrInvalidKey},
		"key with space":  {req("alice", "has a space in it!", `{}`), idem.ErrInvalidKey},
		"unicode key":     {req("alice", "clé-idempotente-ü-0001", `{}`), idem.ErrInvalidKey},
		"256-char key":    {req("alice", strings.Repeat("k", 256), `{}`), idem.ErrInvalidKey},
		"array payload":   {req("alice", newKey(), `[1,2]`), idem.ErrInvalidPayload},
		"duplicate names": {req("alice", newKey(), `{"a":1,"a":2}`), idem.ErrInvalidPayload},
		"too large":       {req("alice", newKey(), `{"a":"`+strings.Repeat("x", 100)+`"}`), idem.ErrInvalidPayload},
		"no operation":    {noOperation, idem.ErrMissingOperation},
	} {
		_, err := call(ctx, g, tc.r, c.handle)
		var e *idem.Error
		if !errors.Is(err, tc.want) || !errors.As(err, &e) || e.Recovery != idem.RecoveryCorrectable {
			t.Errorf("%s: %v, want a correctable %v", name, err, tc.want)
		}
		if tc.r.Key != "" && h.stored(t, backend.Ref{Principal: tc.r.Principal, Key: tc.r.Key}) {
			t.Errorf("%s: the key was stored", name)
		}
	}
	if c.runs.Load() != 0 {
		t.Fatalf("the handler ran %d times for invalid requests", c.runs.Load())
	}
	// 255 characters of every allowed class are fine.
	long := strings.Repeat("Az09_.:-", 32)[:255]
	if _, err := call(ctx, g, req("alice", long, `{}`), c.handle); err != nil {
		t.Fatalf("255-character key: %v", err)
	}
}

func testExpiry(t *testing.T, h suite) {
	ctx := context.Background()
	g := h.caller(t, idem.Config{})
	var c counter
	key := newKey()
	if _, err := call(ctx, g, req("alice", key, `{}`), c.handle); err != nil {
		t.Fatal(err)
	}
	h.Advance(ttl + skew - time.Second)
	if res, err := call(ctx, g, req("alice", key, `{}`), c.handle); err != nil || !res.Replayed {
		t.Fatalf("within TTL+skew: %+v, %v; want a replay", res, err)
	}
	h.Advance(2 * time.Second)
	if _, err := call(ctx, g, req("alice", key, `{}`), c.handle); !errors.Is(err, idem.ErrExpired) {
		t.Fatalf("past TTL+skew: %v, want ErrExpired", err)
	}
	h.Advance(retention)
	res, err := call(ctx, g, req("alice", key, `{"new":true}`), c.handle)
	if err != nil || res.Replayed || res.Value.Run != 2 {
		t.Fatalf("past retention: %+v, %v; want a fresh run", res, err)
	}
}

func testFailure(t *testing.T, h suite) {
	ctx := context.Background()
	g := h.caller(t, idem.Config{})
	var c counter
	key := newKey()
	boom := errors.New("ad server unavailable")
	_, err := call(ctx, g, req("alice", key, `{}`), func(context.Context) (answer, error) { return answer{}, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("handler error: %v, want it returned as is", err)
	}
	if h.stored(t, backend.Ref{Principal: "alice", Key: key}) {
		t.Fatal("after a handler error the key is still held, want it released")
	}
	func() {
		defer func() {
			if r := recover(); r != "bug" {
				t.Fatalf("recovered %v, want the handler's panic", r)
			}
		}()
		_, _ = call(ctx, g, req("alice", key, `{}`), func(context.Context) (answer, error) { panic("bug") })
	}()
	if h.stored(t, backend.Ref{Principal: "alice", Key: key}) {
		t.Fatal("after a panic the key is still held, want it released")
	}
	res, err := call(ctx, g, req("alice", key, `{}`), c.handle)
	if err != nil || res.Replayed || res.Value.Run != 1 {
		t.Fatalf("retry after failures: %+v, %v; want a fresh run", res, err)
	}
	if n := h.committed(t, backend.Ref{Principal: "alice", Key: key}, 1); n != 1 {
		t.Fatalf("%d runs committed, want only the retry's", n)
	}
}

// A caller that goes away after the work is done. On a backend the work
// happened, so its answer must be stored and a retry must replay it. In
// RunInTx the work is uncommitted until the commit, which the ended
// context cancels: nothing is kept and a retry runs once.
func testCancelledAfterWork(t *testing.T, h suite) {
	g := h.caller(t, idem.Config{})
	var c counter
	key := newKey()
	ctx, cancel := context.WithCancel(context.Background())
	res, err := call(ctx, g, req("alice", key, `{}`), func(ctx context.Context) (answer, error) {
		a, err := c.handle(ctx)
		cancel() // the client hangs up as the work finishes
		return a, err
	})
	if h.transactional() {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("RunInTx whose caller left before the commit: %+v, %v; want context.Canceled", res, err)
		}
		again, err := call(context.Background(), g, req("alice", key, `{}`), c.handle)
		if err != nil || again.Replayed || h.committed(t, backend.Ref{Principal: "alice", Key: key}, 0) != 1 {
			t.Fatalf("retry = %+v, %v; want one committed run", again, err)
		}
		return
	}
	if err != nil || res.Value.Run != 1 {
		t.Fatalf("Do whose caller left after the work: %+v, %v; want the answer", res, err)
	}
	replay, err := call(context.Background(), g, req("alice", key, `{}`), c.handle)
	if err != nil || !replay.Replayed || replay.Value != res.Value {
		t.Fatalf("retry = %+v, %v; want the stored answer", replay, err)
	}
}

func testConcurrent(t *testing.T, h suite) {
	g := h.caller(t, idem.Config{WaitLimit: time.Minute})
	key := newKey()
	var runs atomic.Int32
	const n = 64
	results := make([]idem.Result[answer], n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = call(context.Background(), g, req("alice", key, `{"budget":1}`), func(context.Context) (answer, error) {
				runs.Add(1)
				time.Sleep(20 * time.Millisecond) // let the others pile up
				return answer{MediaBuyID: "mb_only"}, nil
			})
		})
	}
	close(start)
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if results[i].Value.MediaBuyID != "mb_only" {
			t.Fatalf("caller %d got %+v", i, results[i].Value)
		}
		if !results[i].Replayed {
			fresh++
		}
	}
	if runs.Load() != 1 || fresh != 1 {
		t.Fatalf("%d runs, %d fresh answers among %d callers; want 1 and 1", runs.Load(), fresh, n)
	}
	if c := h.committed(t, backend.Ref{Principal: "alice", Key: key}, 1); c != 1 {
		t.Fatalf("%d runs committed, want 1", c)
	}
}

func testInFlight(t *testing.T, h suite) {
	ctx := context.Background()
	key := newKey()
	running, finish := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	g := h.caller(t, idem.Config{WaitLimit: time.Hour})
	go func() {
		_, err := call(ctx, g, req("alice", key, `{"budget":1}`), func(context.Context) (answer, error) {
			close(running)
			<-finish
			return answer{MediaBuyID: "mb_1"}, nil
		})
		first <- err
	}()
	<-running

	// On a backend the holder's entry is visible: a different payload
	// conflicts at once, even with an hour to wait, while the first handler
	// is still blocked. (In RunInTx the holder's row is uncommitted, so a
	// different payload waits like a duplicate.)
	if !h.transactional() {
		if _, err := call(ctx, g, req("alice", key, `{"budget":2}`), (&counter{}).handle); !errors.Is(err, idem.ErrConflict) {
			t.Fatalf("different payload while in flight: %v, want ErrConflict", err)
		}
	}
	// RejectInFlight answers at once, with a retry hint (another Guard or
	// Store, as from another replica).
	reject := h.caller(t, idem.Config{Duplicates: idem.RejectInFlight})
	_, err := call(ctx, reject, req("alice", key, `{"budget":1}`), (&counter{}).handle)
	var e *idem.Error
	if !errors.Is(err, idem.ErrInFlight) || !errors.As(err, &e) || e.RetryAfter <= 0 || e.Code != idem.CodeIdempotencyInFlight {
		t.Fatalf("RejectInFlight: %v, want IDEMPOTENCY_IN_FLIGHT with a retry hint", err)
	}
	// WaitThenReplay gives up after its limit.
	short := h.caller(t, idem.Config{WaitLimit: 30 * time.Millisecond})
	if _, err := call(ctx, short, req("alice", key, `{"budget":1}`), (&counter{}).handle); !errors.Is(err, idem.ErrInFlight) {
		t.Fatalf("wait limit exceeded: %v, want ErrInFlight", err)
	}
	// A cancelled wait returns the context's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := call(cctx, g, req("alice", key, `{"budget":1}`), (&counter{}).handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v, want context.Canceled", err)
	}
	// A waiter gets the answer once the first request completes.
	waiter := make(chan idem.Result[answer], 1)
	go func() {
		res, err := call(ctx, g, req("alice", key, `{"budget":1}`), (&counter{}).handle)
		if err != nil {
			t.Errorf("waiting duplicate: %v", err)
		}
		waiter <- res
	}()
	close(finish)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if res := <-waiter; !res.Replayed || res.Value.MediaBuyID != "mb_1" {
		t.Fatalf("waiting duplicate = %+v, want the replayed answer", res)
	}
}

func testLeaseTakeoverThroughDo(t *testing.T, h suite) {
	ctx := context.Background()
	g := h.caller(t, idem.Config{Duplicates: idem.RejectInFlight})
	key := newKey()
	running, finish := make(chan struct{}), make(chan struct{})
	stale := make(chan error, 1)
	go func() {
		_, err := call(ctx, g, req("alice", key, `{}`), func(context.Context) (answer, error) {
			close(running)
			<-finish
			return answer{MediaBuyID: "mb_stale"}, nil
		})
		stale <- err
	}()
	<-running
	h.Advance(lease + time.Second) // the first owner is presumed dead
	var c counter
	res, err := call(ctx, g, req("alice", key, `{}`), c.handle)
	if err != nil || res.Replayed || res.Value.Run != 1 {
		t.Fatalf("after the lease ended: %+v, %v; want a fresh run", res, err)
	}
	close(finish)
	if err := <-stale; !errors.Is(err, idem.ErrStorage) || !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("the stale owner's completion: %v, want a storage error wrapping ErrNotOwner", err)
	}
	replay, err := call(ctx, g, req("alice", key, `{}`), c.handle)
	if err != nil || !replay.Replayed || replay.Value != res.Value {
		t.Fatalf("replay = %+v, %v; want the successor's answer %+v", replay, err, res.Value)
	}
}

func testRateLimit(t *testing.T, h suite) {
	ctx := context.Background()
	g := h.caller(t, idem.Config{Limiter: idem.NewLimiter(idem.Limits{Writes: idem.Rate{PerSecond: 0.001, Burst: 1}, Reads: idem.Rate{PerSecond: 0.001, Burst: 1}})})
	var c counter
	key := newKey()
	if _, err := call(ctx, g, req("alice", key, `{}`), c.handle); err != nil {
		t.Fatal(err)
	}
	limited := newKey()
	_, err := call(ctx, g, req("alice", limited, `{}`), c.handle)
	var e *idem.Error
	if !errors.Is(err, idem.ErrRateLimited) || !errors.As(err, &e) || e.RetryAfter <= 0 {
		t.Fatalf("second new key: %v, want RATE_LIMITED with a retry hint", err)
	}
	if res, err := call(ctx, g, req("alice", key, `{}`), c.handle); err != nil || !res.Replayed {
		t.Fatalf("replay while limited: %+v, %v; replays are not limited", res, err)
	}
	if c.runs.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", c.runs.Load())
	}
	if h.stored(t, backend.Ref{Principal: "alice", Key: limited}) {
		t.Fatal("a rate-limited request left its key stored")
	}
}

func testIsolation(t *testing.T, h suite) {
	ctx := context.Background()
	g := h.caller(t, idem.Config{})
	var c counter
	key := newKey()
	a, err := call(ctx, g, req("alice", key, `{"budget":1}`), c.handle)
	if err != nil {
		t.Fatal(err)
	}
	b, err := call(ctx, g, req("bob", key, `{"budget":2}`), c.handle)
	if err != nil || a.Replayed || b.Replayed || a.Value == b.Value {
		t.Fatalf("alice %+v, bob %+v (%v): want two fresh runs", a, b, err)
	}
}

func testRenew(t *testing.T, h suite) {
	ctx := context.Background()
	ref := backend.Ref{Principal: "alice", Key: newKey()}
	mustClaim(t, h, h.claim(t, ref, "owner"))
	renew := func(owner string) error {
		return h.Backend.Renew(ctx, backend.Renewal{Ref: ref, Owner: owner, Lease: lease, Retention: retention, At: h.at()})
	}
	// Renewed just before it ends, the lease runs a full lease from then.
	h.Advance(lease - time.Second)
	if err := renew("owner"); err != nil {
		t.Fatalf("Renew by the owner: %v", err)
	}
	h.Advance(lease - time.Second)
	if held, err := h.Backend.Claim(ctx, h.claim(t, ref, "successor")); err != nil || held == nil {
		t.Fatalf("Claim within the renewed lease = %+v, %v; want the holder", held, err)
	}
	if err := renew("intruder"); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Renew by a non-owner: %v, want ErrNotOwner", err)
	}
	// Once the lease has lapsed and the key was taken over, the old owner
	// can no longer renew it.
	h.Advance(2 * time.Second)
	mustClaim(t, h, h.claim(t, ref, "successor"))
	if err := renew("owner"); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Renew by the owner after a takeover: %v, want ErrNotOwner", err)
	}
	if err := h.Backend.Complete(ctx, h.completion(ref, "successor", `"done"`)); err != nil {
		t.Fatal(err)
	}
	if err := renew("successor"); !errors.Is(err, backend.ErrNotOwner) {
		t.Fatalf("Renew of a completed entry: %v, want ErrNotOwner", err)
	}
	if e := mustGet(t, h, ref); e == nil || string(e.Response) != `"done"` {
		t.Fatalf("entry = %+v, want the completed answer untouched", e)
	}
}

// unencodable is a value that encoding/json refuses.
type unencodable struct {
	Budget float64 `json:"budget"`
}

func (unencodable) MarshalJSON() ([]byte, error) { return nil, errors.New("cannot encode") }

// A handler whose value cannot be encoded. On a backend its side effect
// happened and must not run again: the key keeps a marker and every retry
// gets ErrUnencodable. In RunInTx everything rolls back, so each call runs
// (and fails) again, and nothing is stored.
func testUnencodable(t *testing.T, h suite) {
	ctx := context.Background()
	g := h.caller(t, idem.Config{})
	var sideEffects atomic.Int32
	key := newKey()
	for i := range 4 {
		_, err := call(ctx, g, req("alice", key, `{"budget":1}`), func(context.Context) (unencodable, error) {
			sideEffects.Add(1)
			return unencodable{Budget: 1}, nil
		})
		var e *idem.Error
		if !errors.Is(err, idem.ErrUnencodable) || !errors.As(err, &e) || e.Code != idem.CodeConfigurationError || e.Recovery != idem.RecoveryTerminal {
			t.Fatalf("call %d: %v, want ErrUnencodable (CONFIGURATION_ERROR, terminal)", i+1, err)
		}
	}
	want := int32(1)
	if h.transactional() {
		want = 4
		if h.stored(t, backend.Ref{Principal: "alice", Key: key}) || h.committed(t, backend.Ref{Principal: "alice", Key: key}, 0) != 0 {
			t.Fatal("RunInTx kept something of a run whose answer could not be encoded")
		}
	}
	if n := sideEffects.Load(); n != want {
		t.Fatalf("the handler ran %d times over 4 calls, want %d", n, want)
	}
	// A handler may say the same itself.
	key2 := newKey()
	for range 2 {
		_, err := call(ctx, g, req("alice", key2, `{}`), func(context.Context) (answer, error) {
			sideEffects.Add(1)
			return answer{}, fmt.Errorf("rendering the answer: %w", idem.ErrUnencodable)
		})
		if !errors.Is(err, idem.ErrUnencodable) {
			t.Fatalf("handler returning ErrUnencodable: %v", err)
		}
	}
	want++
	if h.transactional() {
		want++
	}
	if n := sideEffects.Load(); n != want {
		t.Fatalf("the handler ran %d times in all, want %d", n, want)
	}
	// A different payload under the key is a conflict where the key is
	// kept, a fresh run where it is not.
	_, err := call(ctx, g, req("alice", key, `{"budget":2}`), (&counter{}).handle)
	if h.transactional() && err != nil || !h.transactional() && !errors.Is(err, idem.ErrConflict) {
		t.Fatalf("different payload: %v", err)
	}
}

// A handler slower than the lease keeps its key: the Guard renews the
// lease, so a duplicate that arrives after the first lease would have ended
// finds the key still in flight instead of running the work again. This
// test runs on the backend's real clock.
func testSlowHandler(t *testing.T, h suite) {
	ctx := context.Background()
	g, err := idem.NewGuard(h.Backend, &idem.Config{
		Lease: time.Second, Duplicates: idem.RejectInFlight, Limiter: idem.Unlimited,
	})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey()
	var runs atomic.Int32
	handler := func(context.Context) (answer, error) {
		n := runs.Add(1)
		if n == 1 {
			time.Sleep(2500 * time.Millisecond) // two and a half leases
		}
		return answer{MediaBuyID: "mb_slow", Run: int64(n)}, nil
	}
	first := make(chan error, 1)
	go func() {
		_, err := idem.Do(ctx, g, req("alice", key, `{}`), handler)
		first <- err
	}()
	// Duplicates over the handler's run, past the end of the first lease.
	for range 6 {
		time.Sleep(300 * time.Millisecond)
		_, err := idem.Do(ctx, g, req("alice", key, `{}`), handler)
		if err == nil {
			break // the first finished: this was a replay
		}
		if !errors.Is(err, idem.ErrInFlight) {
			t.Fatalf("duplicate while the first runs: %v, want ErrInFlight", err)
		}
	}
	if err := <-first; err != nil {
		t.Fatalf("the slow first call: %v", err)
	}
	res, err := idem.Do(ctx, g, req("alice", key, `{}`), handler)
	if err != nil || !res.Replayed || res.Value.Run != 1 {
		t.Fatalf("after the slow call: %+v, %v; want its answer replayed", res, err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times, want 1", n)
	}
}

// A context that has already ended is refused before anything is claimed:
// the handler never runs and nothing blocks the key.
func testEndedContext(t *testing.T, h suite) {
	g := h.caller(t, idem.Config{})
	key := newKey()
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	var c counter
	if _, err := call(cctx, g, req("alice", key, `{}`), c.handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do with an ended context: %v, want context.Canceled", err)
	}
	if c.runs.Load() != 0 {
		t.Fatal("the handler ran with an ended context")
	}
	if h.stored(t, backend.Ref{Principal: "alice", Key: key}) {
		t.Fatal("a refused call left its key stored")
	}
	if res, err := call(context.Background(), g, req("alice", key, `{}`), c.handle); err != nil || res.Replayed || c.runs.Load() != 1 {
		t.Fatalf("the next call: %+v, %v; want a fresh run", res, err)
	}
}

// Operation names are validated like keys, before any backend sees them.
func testMalformedOperation(t *testing.T, h suite) {
	ctx := context.Background()
	g := h.caller(t, idem.Config{})
	var c counter
	for name, op := range map[string]string{
		"NUL byte":      "create\x00media_buy",
		"invalid UTF-8": "create_\xffmedia_buy",
		"10,000 bytes":  strings.Repeat("a", 10_000),
		"space":         "create media_buy",
	} {
		key := newKey()
		r := req("alice", key, `{}`)
		r.Operation = op
		_, err := call(ctx, g, r, c.handle)
		var e *idem.Error
		if !errors.Is(err, idem.ErrInvalidOperation) || !errors.As(err, &e) || e.Code != idem.CodeInvalidRequest {
			t.Fatalf("%s: %v, want ErrInvalidOperation (INVALID_REQUEST)", name, err)
		}
		if strings.Contains(err.Error(), op) {
			t.Fatalf("%s: the error echoes the operation name", name)
		}
		if h.stored(t, backend.Ref{Principal: "alice", Key: key}) {
			t.Fatalf("%s: the key was stored", name)
		}
	}
	if c.runs.Load() != 0 {
		t.Fatalf("the handler ran %d times for malformed operations", c.runs.Load())
	}
}

// An answer stored under one type and replayed into an incompatible one
// (the seller changed its response type) is its own error, never a rerun.
func testUndecodable(t *testing.T, h suite) {
	ctx := context.Background()
	var observed []idem.Outcome
	g := h.caller(t, idem.Config{Observer: idem.ObserverFunc(func(_ context.Context, o idem.Observation) { observed = append(observed, o.Outcome) })})
	key := newKey()
	if _, err := call(ctx, g, req("alice", key, `{}`), func(context.Context) (answer, error) {
		return answer{MediaBuyID: "mb_1", Run: 1}, nil
	}); err != nil {
		t.Fatal(err)
	}
	type changed struct {
		MediaBuyID int `json:"media_buy_id"` // was a string
	}
	ran := false
	_, err := call(ctx, g, req("alice", key, `{}`), func(context.Context) (changed, error) { ran = true; return changed{}, nil })
	var e *idem.Error
	if !errors.Is(err, idem.ErrUndecodable) || !errors.As(err, &e) || e.Code != idem.CodeConfigurationError {
		t.Fatalf("replay into a changed type: %v, want ErrUndecodable (CONFIGURATION_ERROR)", err)
	}
	if ran {
		t.Fatal("the handler ran again")
	}
	if len(observed) != 2 || observed[1] != idem.OutcomeUndecodable {
		t.Fatalf("outcomes %v, want [executed undecodable]", observed)
	}
}

// The in-flight bound: a handler that runs past Config.InFlightMax has its
// context ended (cause idem.ErrHandlerTimeout), the request is treated as
// failed and its key is free again, and capabilities declare the bound.
// Runs on the real clock (one second).
func testInFlightBound(t *testing.T, h suite) {
	ctx := context.Background()
	c := h.caller(t, idem.Config{InFlightMax: time.Second})
	key := newKey()
	var cause error
	_, err := call(ctx, c, req("alice", key, `{}`), func(ctx context.Context) (answer, error) {
		<-ctx.Done()
		cause = context.Cause(ctx)
		return answer{}, ctx.Err()
	})
	if !errors.Is(cause, idem.ErrHandlerTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handler past the bound: cause %v, error %v; want ErrHandlerTimeout and the deadline", cause, err)
	}
	var r counter
	if res, err := call(ctx, c, req("alice", key, `{}`), r.handle); err != nil || res.Replayed || r.runs.Load() != 1 {
		t.Fatalf("retry after the bound: %+v, %v; want a fresh run", res, err)
	}
	var cap idem.Capability
	if c.g != nil {
		cap = c.g.Capability()
	} else {
		cap = c.s.Capability()
	}
	if cap.InFlightMaxSeconds != 1 || cap.ReplayTTLSeconds != int(ttl/time.Second) || !cap.Supported {
		t.Fatalf("capability %+v, want in_flight_max_seconds 1", cap)
	}
	for _, bad := range []idem.Config{{TTL: time.Hour, InFlightMax: 2 * time.Hour}, {InFlightMax: 1500 * time.Millisecond}, {InFlightMax: time.Minute, Lease: 2 * time.Minute}} {
		if _, err := idem.NewStore(&bad); err == nil {
			t.Errorf("Config %+v was accepted", bad)
		}
	}
}

// Retention counts from the first accepted request: a handler that takes
// half an hour does not push the end of the replay window, and retries
// never extend it.
func testRetentionFromClaim(t *testing.T, h suite) {
	ctx := context.Background()
	c := h.caller(t, idem.Config{InFlightMax: time.Hour})
	key := newKey()
	if _, err := call(ctx, c, req("alice", key, `{}`), func(context.Context) (answer, error) {
		h.Advance(30 * time.Minute) // the handler's run, on the suite's clock
		return answer{MediaBuyID: "mb_slow"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	h.Advance(ttl - 30*time.Minute - time.Minute) // a minute before the window ends
	if res, err := call(ctx, c, req("alice", key, `{}`), (&counter{}).handle); err != nil || !res.Replayed {
		t.Fatalf("inside the window: %+v, %v; want a replay", res, err)
	}
	h.Advance(time.Minute + skew + time.Second) // past the window counted from the claim
	if _, err := call(ctx, c, req("alice", key, `{}`), (&counter{}).handle); !errors.Is(err, idem.ErrExpired) {
		t.Fatalf("past TTL+skew from the claim: %v, want ErrExpired (the window counts from the first request)", err)
	}
}

// Keys are scoped by (principal, account): the same key under another
// account of the same principal is another key.
func testAccountScope(t *testing.T, h suite) {
	ctx := context.Background()
	c := h.caller(t, idem.Config{})
	var r counter
	key := newKey()
	a := req("alice", key, `{"budget":1}`)
	a.Account = "acct_1"
	b := a
	b.Account = "acct_2"
	first, err := call(ctx, c, a, r.handle)
	if err != nil {
		t.Fatal(err)
	}
	other, err := call(ctx, c, b, r.handle)
	if err != nil || other.Replayed || other.Value == first.Value {
		t.Fatalf("same key, another account: %+v, %v; want a fresh run", other, err)
	}
	again, err := call(ctx, c, a, r.handle)
	if err != nil || !again.Replayed || again.Value != first.Value {
		t.Fatalf("same key, same account: %+v, %v; want the replay", again, err)
	}
	if h.stored(t, backend.Ref{Principal: "alice", Key: key}) {
		t.Fatal("the key is stored outside its account")
	}
	if r.runs.Load() != 2 {
		t.Fatalf("%d runs, want 2", r.runs.Load())
	}
}

// Reads and writes have budgets of their own: a principal that spent its
// write budget can still make keyed reads, and the other way round. A
// RATE_LIMITED request stores nothing, carries a retry hint, and runs once
// the wait is over.
func testBudgets(t *testing.T, h suite) {
	ctx := context.Background()
	// One token a second: each pair of calls below must fall within one
	// refill, which a loaded machine (a slow first connection) can stretch
	// well past the 50 ms of a faster rate.
	c := h.caller(t, idem.Config{Limiter: idem.NewLimiter(idem.Limits{
		Writes: idem.Rate{PerSecond: 1, Burst: 1}, Reads: idem.Rate{PerSecond: 1, Burst: 1},
	})})
	var r counter
	write := func(key string) error { _, err := call(ctx, c, req("alice", key, `{}`), r.handle); return err }
	read := func(key string) error {
		q := req("alice", key, `{}`)
		q.Read = true
		q.Operation = "get_media_buys"
		_, err := call(ctx, c, q, r.handle)
		return err
	}
	if err := write(newKey()); err != nil {
		t.Fatal(err)
	}
	limited := newKey()
	err := write(limited)
	var e *idem.Error
	if !errors.Is(err, idem.ErrRateLimited) || !errors.As(err, &e) || e.RetryAfter <= 0 || idem.Wire(err).RetryAfter < 1 {
		t.Fatalf("second write: %v, want RATE_LIMITED with retry_after", err)
	}
	if h.stored(t, backend.Ref{Principal: "alice", Key: limited}) {
		t.Fatal("a rate-limited request was stored")
	}
	if err := read(newKey()); err != nil {
		t.Fatalf("a read with the write budget spent: %v", err)
	}
	if err := read(newKey()); !errors.Is(err, idem.ErrRateLimited) {
		t.Fatalf("second read: %v, want RATE_LIMITED", err)
	}
	time.Sleep(e.RetryAfter + 10*time.Millisecond) // the wait the answer asked for
	if err := write(limited); err != nil {
		t.Fatalf("the rate-limited request after its wait: %v, want it to run", err)
	}
}

// Answers are sealed at rest with the scope and key as associated data:
// the stored bytes hold no plaintext, an answer copied to another key does
// not open, keys rotate without losing old answers, and an answer sealed
// under a retired key is ErrUnreadable with its own outcome.
func testEncryptedAtRest(t *testing.T, h suite) {
	ctx := context.Background()
	k1, k2 := make([]byte, 32), make([]byte, 32)
	for i := range k1 {
		k1[i], k2[i] = byte(i), byte(i+100)
	}
	ring1, err := idem.NewKeyRing("k1", map[string][]byte{"k1": k1})
	if err != nil {
		t.Fatal(err)
	}
	c := h.caller(t, idem.Config{Sealer: ring1})
	secret := "mb_secret_" + newKey()
	key := newKey()
	first, err := call(ctx, c, req("alice", key, `{}`), func(context.Context) (answer, error) { return answer{MediaBuyID: secret}, nil })
	if err != nil || first.Value.MediaBuyID != secret || !strings.Contains(string(first.Response), secret) {
		t.Fatalf("first call: %+v, %v", first, err)
	}
	stored := h.storedResponse(t, backend.Ref{Principal: "alice", Key: key})
	if len(stored) == 0 || strings.Contains(string(stored), secret) || strings.Contains(string(stored), "media_buy_id") {
		t.Fatalf("the stored answer is not sealed: %q", stored)
	}
	if res, err := call(ctx, c, req("alice", key, `{}`), (&counter{}).handle); err != nil || !res.Replayed || res.Value.MediaBuyID != secret {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	// Rotation: k2 seals new answers, k1 still opens the old one.
	ring2, err := idem.NewKeyRing("k2", map[string][]byte{"k1": k1, "k2": k2})
	if err != nil {
		t.Fatal(err)
	}
	c2 := h.caller(t, idem.Config{Sealer: ring2})
	if res, err := call(ctx, c2, req("alice", key, `{}`), (&counter{}).handle); err != nil || !res.Replayed || res.Value.MediaBuyID != secret {
		t.Fatalf("replay after rotation: %+v, %v", res, err)
	}
	key2 := newKey()
	if _, err := call(ctx, c2, req("alice", key2, `{}`), func(context.Context) (answer, error) { return answer{MediaBuyID: secret}, nil }); err != nil {
		t.Fatal(err)
	}
	if s2 := h.storedResponse(t, backend.Ref{Principal: "alice", Key: key2}); len(s2) < 4 || string(s2[2:4]) != "k2" {
		t.Fatalf("a new answer after rotation is not sealed under k2: %q", s2)
	}
	// k1 retired: its answers no longer open.
	var outcomes []idem.Outcome
	ring3, _ := idem.NewKeyRing("k2", map[string][]byte{"k2": k2})
	c3 := h.caller(t, idem.Config{Sealer: ring3, Observer: idem.ObserverFunc(func(_ context.Context, o idem.Observation) { outcomes = append(outcomes, o.Outcome) })})
	_, err = call(ctx, c3, req("alice", key, `{}`), (&counter{}).handle)
	if !errors.Is(err, idem.ErrUnreadable) || idem.Wire(err).Code != "CONFIGURATION_ERROR" || len(outcomes) != 1 || outcomes[0] != idem.OutcomeUnreadable {
		t.Fatalf("answer under a retired key: %v (outcomes %v), want ErrUnreadable", err, outcomes)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatal("the error reveals the answer")
	}
	// An answer copied to another principal's key does not open there.
	if h.Backend != nil {
		ref := backend.Ref{Principal: "mallory", Key: key}
		mustClaim(t, h, h.claim(t, ref, "copier"))
		if err := h.Backend.Complete(ctx, h.completion(ref, "copier", string(stored))); err != nil {
			t.Fatal(err)
		}
		c4 := h.caller(t, idem.Config{Sealer: ring1})
		q := req("mallory", key, `{"a":1}`) // the claim above hashed {"a":1}
		if _, err := call(ctx, c4, q, (&counter{}).handle); !errors.Is(err, idem.ErrUnreadable) {
			t.Fatalf("an answer copied to another principal: %v, want ErrUnreadable", err)
		}
	}
}

// A Guard owner that died (it never renews) blocks its key until its lease
// ends, which is never past the in-flight bound: then the key runs again.
func testDeadOwnerBound(t *testing.T, h suite) {
	ctx := context.Background()
	c := h.caller(t, idem.Config{InFlightMax: time.Minute, Lease: 20 * time.Second})
	key := newKey()
	ref := backend.Ref{Principal: "alice", Key: key}
	dead := h.claim(t, ref, "dead-owner")
	dead.Lease = 20 * time.Second
	dead.Operation, dead.Hash = "create_media_buy", hashOf(t, `{}`)
	mustClaim(t, h, dead)
	var r counter
	_, err := call(ctx, c, req("alice", key, `{}`), r.handle)
	var e *idem.Error
	if !errors.Is(err, idem.ErrInFlight) || !errors.As(err, &e) || e.RetryAfter < time.Second || e.RetryAfter > time.Minute {
		t.Fatalf("while the dead owner's lease runs: %v, want IN_FLIGHT with retry_after within the bound", err)
	}
	if w := idem.Wire(err); w.RetryAfter < 1 || w.RetryAfter > 60 || w.Recovery != "transient" {
		t.Fatalf("wire form %+v, want retry_after in [1, 60] and recovery transient", w)
	}
	h.Advance(20*time.Second + time.Millisecond)
	if res, err := call(ctx, c, req("alice", key, `{}`), r.handle); err != nil || res.Replayed || r.runs.Load() != 1 {
		t.Fatalf("after the dead owner's lease: %+v, %v; want a fresh run", res, err)
	}
}
