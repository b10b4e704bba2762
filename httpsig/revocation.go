package httpsig

import (
	"context"
	"slices"
	"sync"
	"time"
)

// RevocationChecker is the transport revocation check (checklist step 9).
// CheckRevocation returns nil when keyID may be used, an error matching
// ErrKeyRevoked when keyID is in revoked_kids, and one matching
// ErrRevocationStale when the list has not been refreshed within grace.
// Any other error is an operational failure.
type RevocationChecker interface {
	CheckRevocation(ctx context.Context, keyID string) error
}

// RevocationSnapshot is the payload of an operator's signed revocation
// list, after its signature has been verified by the fetcher.
type RevocationSnapshot struct {
	// Issuer is the operator origin the list governs.
	Issuer string `json:"issuer,omitempty"`
	// Updated is when the list was issued; NextUpdate is when it must be
	// polled again. Their difference is the polling interval.
	Updated    time.Time `json:"updated"`
	NextUpdate time.Time `json:"next_update"`
	// RevokedKids invalidates every signature ever made under these kids.
	RevokedKids []string `json:"revoked_kids"`
	// RevokedJTIs is unused by transport signatures (they carry no jti).
	RevokedJTIs []string `json:"revoked_jtis,omitempty"`
}

// RevocationList is an in-memory RevocationChecker holding the latest
// snapshot. The list is stale once now passes next_update plus a grace of
// four polling intervals, the interval being next_update − updated clamped
// to [1 min, 30 min]. A list that was never updated is stale.
type RevocationList struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu   sync.RWMutex
	snap *RevocationSnapshot
}

// Update installs a freshly fetched and verified snapshot.
func (l *RevocationList) Update(s RevocationSnapshot) {
	s.RevokedKids = slices.Clone(s.RevokedKids)
	l.mu.Lock()
	l.snap = &s
	l.mu.Unlock()
}

// CheckRevocation implements RevocationChecker. A revoked kid is reported
// as revoked even when the list is stale.
func (l *RevocationList) CheckRevocation(_ context.Context, keyID string) error {
	l.mu.RLock()
	s := l.snap
	l.mu.RUnlock()
	if s == nil {
		return ErrRevocationStale
	}
	if slices.Contains(s.RevokedKids, keyID) {
		return ErrKeyRevoked
	}
	now := time.Now()
	if l.Now != nil {
		now = l.Now()
	}
	interval := min(max(s.NextUpdate.Sub(s.Updated), time.Minute), 30*time.Minute)
	if now.After(s.NextUpdate.Add(4 * interval)) {
		return ErrRevocationStale
	}
	return nil
}
