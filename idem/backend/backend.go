// Package backend is the interface between package idem's engine and the
// storage of a [Backend]: the package for people who write a backend. To
// make handlers idempotent, use package idem; to pick a backend, see
// package memstore, package redisstore or idem.PostgresBackend.
package backend

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"
)

// Hash is the SHA-256 digest of a request's canonical payload (see
// idem.CanonicalJSONSHA256).
type Hash [sha256.Size]byte

// ErrNotOwner is returned by a [Backend] when a request renews, completes or
// releases a claim it no longer owns (its lease ended and another request
// took the key over, or it was released). The newer owner's claim is left
// untouched.
var ErrNotOwner = errors.New("idempotency claim is owned by another request")

// Backend is the storage an idem.Guard runs on: one that cannot commit together
// with the business data (memory, Redis, or Postgres outside the handler's
// transaction). It keeps one entry per [Ref] and changes it only in atomic
// steps judged by its own clock:
//
//   - a claim makes an in-flight entry owned by an owner token, held for a
//     lease, which the owner renews while its handler runs;
//   - completing stores the response, and releasing deletes the entry, both
//     only for the owner (compare-and-set on the token): a request whose
//     lease ran out and whose key was taken over can never overwrite or
//     delete the new owner's entry;
//   - a completed entry is replayed until ExpiresAt (plus the configured
//     skew), then kept as a tombstone for the retention, then free again.
//
// Every argument that carries an At field is judged at that instant when
// it is set (a test clock, idem.Config.Now), and at the backend's own clock
// when it is zero, as in production. The backend's clock is the storage's
// (Redis TIME, Postgres statement_timestamp()), never the application's, so
// replicas with skewed clocks agree.
//
// Implementations must be safe for concurrent use, by many processes where
// the storage is shared. Package idemtest checks all of the above; run it
// against any new Backend.
type Backend interface {
	// Claim takes the key for c.Owner, with a lease of c.Lease, if no entry
	// holds it: none exists, or it is in flight past its lease, or it
	// completed and its ExpiresAt lies more than c.Retention in the past.
	// It returns nil when the claim was taken, and otherwise the entry that
	// holds the key. Claim must be atomic: of concurrent claims on one key,
	// exactly one gets nil. A backend whose claims can wait for a concurrent
	// claim (Postgres, when a transaction holds the key uncommitted) waits at
	// most c.Wait. A claim resent by its own owner while that claim is live
	// (after a lost reply) may get nil again.
	Claim(ctx context.Context, c Claim) (*Entry, error)

	// Renew extends the lease of r.Ref's in-flight entry to r.Lease from now,
	// if r.Owner still owns it. Otherwise it changes nothing and returns an
	// error matching [ErrNotOwner]. An idem.Guard renews every lease while
	// its handler runs, so that a slow handler never loses its key to a
	// retry.
	Renew(ctx context.Context, r Renewal) error

	// Complete stores c.Response as the answer for c.Ref, replayed for c.TTL
	// from the time the entry was claimed (retention counts from the first
	// accepted request, never from a later step), if c.Owner still owns the
	// in-flight entry. Otherwise it
	// changes nothing and returns an error matching [ErrNotOwner]. A
	// completion resent by the owner with the same response after a lost
	// reply may succeed again.
	Complete(ctx context.Context, c Completion) error

	// Release deletes ref's in-flight entry if owner still owns it, so that
	// a retry runs the work again. Otherwise it changes nothing and returns
	// an error matching [ErrNotOwner].
	Release(ctx context.Context, ref Ref, owner string) error

	// Get returns ref's entry, judged at at (the backend's clock when at is
	// zero), or nil if there is none.
	Get(ctx context.Context, ref Ref, at time.Time) (*Entry, error)

	// Sweep deletes up to s.Limit entries whose ExpiresAt lies more than
	// s.Retention before s.At, and reports how many it deleted.
	Sweep(ctx context.Context, s SweepRequest) (int, error)
}

// Ref names an entry: a key in the namespace of a principal and, when the
// request names one, an account (AdCP scopes keys by both). Backends keep
// every lookup within the whole Ref.
type Ref struct {
	Principal string
	Account   string // "" when the request names no account
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
	// Lease is how long the claim holds the key without being renewed or
	// completed.
	Lease time.Duration
	// Retention is how long past its ExpiresAt a completed entry still holds
	// the key (as a tombstone).
	Retention time.Duration
	// Wait bounds how long a backend that can block on a concurrent claim
	// may do so; zero or less means not at all.
	Wait time.Duration
	// At is the instant to judge by; zero means the backend's clock.
	At time.Time
}

// Renewal is the argument of [Backend.Renew].
type Renewal struct {
	Ref
	// Owner is the token the entry was claimed with.
	Owner string
	// Lease is the new lease, counted from now.
	Lease time.Duration
	// Retention is how long past the lease the entry is kept, for backends
	// that expire records by themselves.
	Retention time.Duration
	// At is the instant to judge by; zero means the backend's clock.
	At time.Time
}

// Completion is the argument of [Backend.Complete].
type Completion struct {
	Ref
	// Owner is the token the entry was claimed with.
	Owner string
	// Response is the answer to store: the JSON encoding of the handler's
	// value (or a marker of this package that no answer could be stored).
	Response []byte
	// TTL is how long the answer is replayed; the entry's ExpiresAt becomes
	// the claim's time + TTL.
	TTL time.Duration
	// Retention is how long past ExpiresAt the entry is kept as a tombstone.
	// Backends that expire records by themselves (Redis) or sweep them in the
	// background (memstore) use it; others rely on Sweep.
	Retention time.Duration
	// At is the instant to judge by; zero means the backend's clock.
	At time.Time
}

// SweepRequest is the argument of [Backend.Sweep].
type SweepRequest struct {
	// Retention is how long past its ExpiresAt an entry is kept.
	Retention time.Duration
	// Limit bounds how many entries one call deletes.
	Limit int
	// At is the instant to judge by; zero means the backend's clock.
	At time.Time
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
	// Now is the instant the entry was judged at: the backend's clock when
	// it read the entry, or the At it was given.
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
