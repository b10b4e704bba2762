package idem

import (
	"context"
	"time"
)

// Backend is the storage a [Guard] runs on: one that cannot commit together
// with the business data (memory, Redis, or Postgres outside the handler's
// transaction). It keeps one entry per [Ref] and changes it only in atomic
// steps judged by its own clock:
//
//   - a claim makes an in-flight entry owned by an owner token, held for a
//     lease;
//   - completing stores the response, and releasing deletes the entry, both
//     only for the owner (compare-and-set on the token): a request whose
//     lease ran out and whose key was taken over can never overwrite or
//     delete the new owner's entry;
//   - a completed entry is replayed until ExpiresAt (plus the configured
//     skew), then kept as a tombstone for the retention, then free again.
//
// Implementations must be safe for concurrent use, by many processes where
// the storage is shared. The package idemtest checks all of the above; run
// it against any new Backend.
type Backend interface {
	// Claim takes the key for c.Owner, with a lease of c.Lease, if no entry
	// holds it: none exists, or it is in flight past its lease, or it
	// completed and its ExpiresAt lies more than c.Retention in the past.
	// It returns nil when the claim was taken, and otherwise the entry that
	// holds the key. Claim must be atomic: of concurrent claims on one key,
	// exactly one gets nil. A claim resent by its own owner while that claim
	// is live (after a lost reply) may get nil again.
	Claim(ctx context.Context, c Claim) (*Entry, error)

	// Complete stores c.Response as the answer for c.Ref, replayed for c.TTL
	// from now, if c.Owner still owns the in-flight entry. Otherwise it
	// changes nothing and returns an error matching [ErrNotOwner]. A
	// completion resent by the owner with the same response after a lost
	// reply may succeed again.
	Complete(ctx context.Context, c Completion) error

	// Release deletes ref's in-flight entry if owner still owns it, so that
	// a retry runs the work again. Otherwise it changes nothing and returns
	// an error matching [ErrNotOwner].
	Release(ctx context.Context, ref Ref, owner string) error

	// Get returns ref's entry, or nil if there is none.
	Get(ctx context.Context, ref Ref) (*Entry, error)

	// Sweep deletes up to limit entries whose ExpiresAt lies more than
	// retention in the past, and reports how many it deleted.
	Sweep(ctx context.Context, retention time.Duration, limit int) (int, error)
}

// Ref names an entry: a key in a principal's namespace.
type Ref struct {
	Principal string
	Key       string
}

// Claim is the argument of [Backend.Claim].
type Claim struct {
	Ref
	// Operation and Hash identify the request, so that a duplicate can be
	// told apart from a conflicting reuse of the key.
	Operation string
	Hash      Hash
	// Owner is a token unique to the claiming request.
	Owner string
	// Lease is how long the claim holds the key without being completed.
	Lease time.Duration
	// Retention is how long past its ExpiresAt a completed entry still holds
	// the key (as a tombstone).
	Retention time.Duration
}

// Completion is the argument of [Backend.Complete].
type Completion struct {
	Ref
	// Owner is the token the entry was claimed with.
	Owner string
	// Response is the answer to store: the JSON encoding of the handler's
	// value.
	Response []byte
	// TTL is how long the answer is replayed; the entry's ExpiresAt becomes
	// now + TTL.
	TTL time.Duration
	// Retention is how long past ExpiresAt the entry is kept as a tombstone.
	// Backends that expire records by themselves (Redis) or sweep them in the
	// background (memstore) use it; others rely on Sweep.
	Retention time.Duration
}

// Entry is a stored entry as a backend read it.
type Entry struct {
	// Operation and Hash are those of the request that claimed the key.
	Operation string
	Hash      Hash
	// Response is the stored answer, or nil while the key is in flight.
	Response []byte
	// ExpiresAt is the end of the lease while in flight, and the end of the
	// replay window once completed.
	ExpiresAt time.Time
	// Now is the backend's clock when the entry was read. Leases and expiry
	// are judged against it, never against the application's clock.
	Now time.Time
}

// Reusable reports whether an entry no longer holds its key at now, the rule
// every [Backend.Claim] applies: an in-flight entry whose lease has ended
// (its owner crashed or gave up), or a completed one whose expiresAt lies
// more than retention in the past.
func Reusable(inFlight bool, expiresAt, now time.Time, retention time.Duration) bool {
	if inFlight {
		return now.After(expiresAt)
	}
	return now.After(expiresAt.Add(retention))
}
