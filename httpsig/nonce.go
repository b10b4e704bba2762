package httpsig

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"
)

// NonceStore is the replay cache, keyed by (keyid, nonce). It must be
// shared by every endpoint a signer can reach (or be scoped per canonical
// destination URL), and enforce a per-keyid entry cap by rejecting, never
// by evicting live entries.
type NonceStore interface {
	// AtCapacity reports whether keyID has reached its entry cap
	// (checklist step 9a, before any cryptographic work).
	AtCapacity(ctx context.Context, keyID string) (bool, error)

	// Remember records (keyID, nonce) until the given time, atomically
	// (checklist steps 12 and 13). It returns an error matching
	// ErrReplayed if the pair is already recorded and unexpired, and one
	// matching ErrRateAbuse if recording it would exceed a cap. Any other
	// error is an operational failure.
	Remember(ctx context.Context, keyID, nonce string, until time.Time) error
}

// Recommended replay-cache caps.
const (
	// DefaultRequestNonceCap is the recommended per-keyid cap for request
	// verifiers.
	DefaultRequestNonceCap = 1_000_000
	// DefaultWebhookNonceCap is the recommended per-keyid cap for webhook
	// receivers, whose cache sees every seller they integrate with.
	DefaultWebhookNonceCap = 100_000
	// DefaultTotalNonceCap is the recommended aggregate cap.
	DefaultTotalNonceCap = 10_000_000
)

// MemoryNonceStore is an in-process NonceStore. Entries are dropped once
// expired; live entries are never evicted. It is only conformant for a
// single-process verifier serving a single endpoint.
type MemoryNonceStore struct {
	// PerKeyCap and TotalCap bound the number of live entries per keyid
	// and overall; zero or negative means unbounded.
	PerKeyCap, TotalCap int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	keys  map[string]*nonceSet
	total int
}

// NewMemoryNonceStore returns a store with the given per-keyid cap and the
// recommended aggregate cap.
func NewMemoryNonceStore(perKeyCap int) *MemoryNonceStore {
	return &MemoryNonceStore{PerKeyCap: perKeyCap, TotalCap: DefaultTotalNonceCap}
}

// nonceSet holds one keyid's live nonces, with a min-heap on expiry so
// expired entries are pruned in O(log n) each.
type nonceSet struct {
	until map[string]time.Time
	order nonceHeap
}

type nonceEntry struct {
	nonce string
	until time.Time
}

type nonceHeap []nonceEntry

func (h nonceHeap) Len() int           { return len(h) }
func (h nonceHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h nonceHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nonceHeap) Push(x any)        { *h = append(*h, x.(nonceEntry)) }
func (h *nonceHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func (s *MemoryNonceStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// prune drops the expired entries of one keyid; s.mu is held.
func (s *MemoryNonceStore) prune(keyID string, now time.Time) *nonceSet {
	set := s.keys[keyID]
	if set == nil {
		return nil
	}
	for set.order.Len() > 0 && !set.order[0].until.After(now) {
		e := heap.Pop(&set.order).(nonceEntry)
		if u, ok := set.until[e.nonce]; ok && u.Equal(e.until) {
			delete(set.until, e.nonce)
			s.total--
		}
	}
	if len(set.until) == 0 {
		delete(s.keys, keyID)
		return nil
	}
	return set
}

// AtCapacity implements NonceStore.
func (s *MemoryNonceStore) AtCapacity(_ context.Context, keyID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.prune(keyID, s.now())
	if s.PerKeyCap > 0 && set != nil && len(set.until) >= s.PerKeyCap {
		return true, nil
	}
	return s.TotalCap > 0 && s.total >= s.TotalCap, nil
}

// Remember implements NonceStore.
func (s *MemoryNonceStore) Remember(_ context.Context, keyID, nonce string, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	set := s.prune(keyID, now)
	if set != nil {
		if _, seen := set.until[nonce]; seen {
			return ErrReplayed
		}
	}
	if s.PerKeyCap > 0 && set != nil && len(set.until) >= s.PerKeyCap {
		return fmt.Errorf("%w: per-keyid cap %d reached", ErrRateAbuse, s.PerKeyCap)
	}
	if s.TotalCap > 0 && s.total >= s.TotalCap {
		s.sweep(now)
		if s.total >= s.TotalCap {
			return fmt.Errorf("%w: aggregate cap %d reached", ErrRateAbuse, s.TotalCap)
		}
	}
	if !until.After(now) {
		return nil // already expired: nothing to remember
	}
	if set == nil {
		if s.keys == nil {
			s.keys = map[string]*nonceSet{}
		}
		set = &nonceSet{until: map[string]time.Time{}}
		s.keys[keyID] = set
	}
	set.until[nonce] = until
	heap.Push(&set.order, nonceEntry{nonce: nonce, until: until})
	s.total++
	return nil
}

// sweep prunes every keyid; s.mu is held.
func (s *MemoryNonceStore) sweep(now time.Time) {
	for k := range s.keys {
		s.prune(k, now)
	}
}

// Len returns the number of live entries.
func (s *MemoryNonceStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(s.now())
	return s.total
}
