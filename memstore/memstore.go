// Package memstore is an in-process [backend.Backend]: a sharded map with a
// background sweeper. Use it in tests, in reference agents and in
// single-process sellers that accept losing their replay window on restart.
//
// Everything lives in this process's memory: a restart forgets every key (a
// retry after a restart runs the work again), and two processes never see
// each other's keys. For durable or shared storage use the Postgres store of
// package idem, or package redisstore.
//
// A Store is safe for concurrent use. Keys are spread over shards, each with
// its own lock, so unrelated keys do not contend.
package memstore

import (
	"bytes"
	"cmp"
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/adcp-go/idempotency/idem/backend"
)

const shardCount = 64

// Options configures a [Store]. A nil *Options, and every zero field, means
// the default.
type Options struct {
	// SweepInterval is how often the background sweeper deletes entries
	// whose tombstone retention (or abandoned lease) has ended. Defaults to
	// one minute; a negative value turns the sweeper off.
	SweepInterval time.Duration
}

// Store is the in-memory backend. Create it with [New] and stop its sweeper
// with [Store.Close]; the zero value is not usable.
type Store struct {
	seed   maphash.Seed
	shards [shardCount]shard

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type shard struct {
	mu      sync.Mutex
	entries map[backend.Ref]*entry
}

type entry struct {
	operation string
	hash      backend.Hash
	response  []byte    // nil while in flight
	owner     string    // set while in flight
	createdAt time.Time // when the key was claimed: the replay window counts from it
	expiresAt time.Time
	freeAt    time.Time // when the background sweeper may delete it
}

var _ backend.Backend = (*Store)(nil)

// New returns a Store and starts its sweeper.
func New(opts *Options) *Store {
	if opts == nil {
		opts = &Options{}
	}
	s := &Store{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].entries = make(map[backend.Ref]*entry)
	}
	interval := cmp.Or(opts.SweepInterval, time.Minute)
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	if interval < 0 {
		close(s.done)
		return s
	}
	go s.sweeper(interval)
	return s
}

// Close stops the sweeper and waits for it to exit. The store stays usable;
// it just no longer sweeps by itself. Close is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

func (s *Store) sweeper(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			now := time.Now()
			for i := range s.shards {
				sh := &s.shards[i]
				sh.mu.Lock()
				for ref, e := range sh.entries {
					if now.After(e.freeAt) {
						delete(sh.entries, ref)
					}
				}
				sh.mu.Unlock()
			}
		}
	}
}

func (s *Store) shard(ref backend.Ref) *shard {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(ref.Principal)
	h.WriteByte(0)
	h.WriteString(ref.Account)
	h.WriteByte(0)
	h.WriteString(ref.Key)
	return &s.shards[h.Sum64()%shardCount]
}

// now is the instant a call is judged at: at, or the process clock.
func now(at time.Time) time.Time {
	if at.IsZero() {
		return time.Now()
	}
	return at
}

// Claim implements [backend.Backend]. It never waits: the entry of a
// concurrent claim is visible at once.
func (s *Store) Claim(ctx context.Context, c backend.Claim) (*backend.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sh := s.shard(c.Ref)
	now := now(c.At)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.entries[c.Ref]; e != nil && !backend.Reusable(e.response == nil, e.expiresAt, now, c.Retention) {
		return e.view(now), nil
	}
	expires := now.Add(c.Lease)
	sh.entries[c.Ref] = &entry{
		operation: c.Operation, hash: c.Hash, owner: c.Owner,
		createdAt: now, expiresAt: expires, freeAt: expires.Add(c.Retention),
	}
	return nil, nil
}

// Renew implements [backend.Backend].
func (s *Store) Renew(ctx context.Context, r backend.Renewal) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sh := s.shard(r.Ref)
	now := now(r.At)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entries[r.Ref]
	if e == nil || e.response != nil || e.owner != r.Owner {
		return backend.ErrNotOwner
	}
	e.expiresAt = now.Add(r.Lease)
	e.freeAt = e.expiresAt.Add(r.Retention)
	return nil
}

// Complete implements [backend.Backend].
func (s *Store) Complete(_ context.Context, c backend.Completion) error {
	sh := s.shard(c.Ref)
	response := slices.Clip(bytes.Clone(c.Response)) // callers may append to what Get returns
	if response == nil {
		response = []byte("null")
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entries[c.Ref]
	if e == nil || e.response != nil || e.owner != c.Owner {
		return backend.ErrNotOwner
	}
	e.response, e.owner = response, ""
	e.expiresAt = e.createdAt.Add(c.TTL)
	e.freeAt = e.expiresAt.Add(c.Retention)
	return nil
}

// Release implements [backend.Backend].
func (s *Store) Release(_ context.Context, ref backend.Ref, owner string) error {
	sh := s.shard(ref)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entries[ref]
	if e == nil || e.response != nil || e.owner != owner {
		return backend.ErrNotOwner
	}
	delete(sh.entries, ref)
	return nil
}

// Get implements [backend.Backend].
func (s *Store) Get(_ context.Context, ref backend.Ref, at time.Time) (*backend.Entry, error) {
	sh := s.shard(ref)
	now := now(at)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.entries[ref]; e != nil {
		return e.view(now), nil
	}
	return nil, nil
}

// Sweep implements [backend.Backend]. The background sweeper makes calling it
// unnecessary, but it works.
func (s *Store) Sweep(ctx context.Context, r backend.SweepRequest) (int, error) {
	now := now(r.At)
	n := 0
	for i := range s.shards {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		sh := &s.shards[i]
		sh.mu.Lock()
		for ref, e := range sh.entries {
			if n >= r.Limit {
				break
			}
			if now.After(e.expiresAt.Add(r.Retention)) {
				delete(sh.entries, ref)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n, nil
}

// Len reports how many entries the store holds (in flight, completed and
// tombstones).
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.entries)
		sh.mu.Unlock()
	}
	return n
}

// view returns a copy of e as the caller may see it; the stored response
// is shared, never modified in place, and callers must not modify it.
func (e *entry) view(now time.Time) *backend.Entry {
	return &backend.Entry{Operation: e.operation, Hash: e.hash, Response: e.response, ExpiresAt: e.expiresAt, Now: now}
}
