package idem

import (
	"cmp"
	"fmt"
	"time"

	"github.com/adcp-go/idempotency/idem/backend"
)

// Bounds and defaults of the replay window, from AdCP.
const (
	MinTTL     = time.Hour
	MaxTTL     = 7 * 24 * time.Hour
	DefaultTTL = 24 * time.Hour
)

// DuplicatePolicy says what a request does when another request with the same
// key and payload is still running.
type DuplicatePolicy int

const (
	// WaitThenReplay waits up to Config.WaitLimit for the first request to
	// finish and then answers with its stored response (or runs the work if
	// the first request failed and released the key). Past the limit the
	// answer is IDEMPOTENCY_IN_FLIGHT. This is the default.
	WaitThenReplay DuplicatePolicy = iota
	// RejectInFlight answers IDEMPOTENCY_IN_FLIGHT at once. (In Postgres, a
	// duplicate of a key that another process holds in an uncommitted
	// transaction is told apart only by waiting for it: there the claim
	// waits up to 100 ms, the shortest lock wait that never mistakes a
	// busy table for a held key.)
	RejectInFlight
)

// Config configures a [Store] or a [Guard]. A nil *Config, and every zero
// field, means the default.
type Config struct {
	// TTL is the replay window (AdCP replay_ttl_seconds): how long a stored
	// answer is replayed. It must lie in [MinTTL, MaxTTL] and be a whole
	// number of seconds. Defaults to 24 hours.
	TTL time.Duration

	// ClockSkew is how long past the TTL a retry is still replayed, to
	// absorb clock differences between buyer and seller. Defaults to 60
	// seconds.
	ClockSkew time.Duration

	// TombstoneRetention is how long after its TTL a key is still remembered:
	// until then a retry gets IDEMPOTENCY_EXPIRED, never a silent second
	// execution; after it the key is free and the sweeper deletes it. Must be
	// at least ClockSkew. Defaults to 24 hours.
	TombstoneRetention time.Duration

	// WaitLimit bounds how long a request waits for a concurrent request
	// with the same key (for the Postgres store, the transaction-local
	// lock_timeout of the claim, so at most 2^31-1 milliseconds, about 24
	// days; the claim's lock wait is never below 100 ms, see
	// RejectInFlight). Defaults to 5 seconds.
	WaitLimit time.Duration

	// Duplicates is the policy for a concurrent duplicate. Defaults to
	// [WaitThenReplay].
	Duplicates DuplicatePolicy

	// InFlightMax is the in-flight bound (AdCP's in_flight_max_seconds, the
	// per-task handler timeout): a request never holds its key longer. The
	// handler's context ends when it is reached (with cause
	// [ErrHandlerTimeout]), and a claim whose owner died or hung is released
	// after it at the latest, so the key can run again. It is declared in
	// [Capability]. A whole number of seconds, at least one, at most TTL.
	// Defaults to 2 minutes (AdCP's working-response timeout).
	InFlightMax time.Duration

	// Lease is how long a claim made through a [Guard] holds the key without
	// being renewed: the Guard renews it every Lease/3 while the handler
	// runs (never past InFlightMax), so it bounds how long a crashed owner
	// blocks the key, not how long a handler may run. At least one second,
	// at most InFlightMax. Defaults to a quarter of InFlightMax, at most 30
	// seconds.
	Lease time.Duration

	// Limiter limits how fast each (principal, account) stores new keys, in
	// a budget for writes and one for reads (replays are never limited).
	// Defaults to [NewLimiter]([DefaultLimits]): AdCP's recommended 60 new
	// write keys a second with bursts of 300, and 300 read keys with bursts
	// of 1,500, counted in this process only. [NewPostgresLimiter] and
	// redisstore's limiter share the budgets across replicas. Use
	// [Unlimited] to turn it off.
	Limiter Limiter

	// MaxPayloadBytes rejects larger payloads with INVALID_REQUEST before
	// they are parsed. At most 64 MiB. Defaults to 1 MiB.
	MaxPayloadBytes int

	// SweepBatch is how many rows one sweep statement deletes at most.
	// At most 1,000,000. Defaults to 1000.
	SweepBatch int

	// ReplayPreRead makes [RunInTx] look a key up before claiming it: one
	// indexed read by primary key, outside any transaction, that answers a
	// completed key within its replay window at once (the stored answer, or
	// [ErrConflict] for another payload) without beginning a transaction.
	// Anything else — no row, a key in flight, past its window, a failed
	// read — goes on to the claim, as without it. A replay then costs one
	// round trip instead of two, and a new key one more (three for the
	// claim path, four with the pre-read). It is safe (see "Replay
	// pre-read" in docs/RELIABILITY.md): a read outside a transaction sees
	// only committed rows, and RunInTx completes a row only in the
	// transaction that commits the handler's writes. It applies only when
	// RunInTx owns the connection (conn is a pool or a connection), never
	// inside a caller's pgx.Tx. Defaults to off: turn it on where retries
	// are frequent.
	ReplayPreRead bool

	// Sealer, if set, encrypts every stored answer at rest (see [Sealer] and
	// [KeyRing]), as AdCP requires. Defaults to none: answers are stored in
	// plaintext, readable by anyone who can read the storage or its
	// backups.
	Sealer Sealer

	// Observer, if set, watches every RunInTx and Do call and every sweep,
	// for metrics and traces (see [Observer], [ObserverFunc] and package
	// idemotel). Defaults to none.
	Observer Observer

	// Now replaces the storage clock, for tests: with it set, every backend
	// judges leases, replay windows and tombstones at Now() instead of at
	// its own clock. Leave nil in production, where the storage's clock
	// decides (Postgres statement_timestamp(), Redis TIME, the process
	// clock for memstore), so that replicas with skewed clocks agree.
	Now func() time.Time
}

// Upper bounds of the Config fields: what every backend can honour.
const (
	maxClockSkew    = time.Hour
	maxRetention    = 365 * 24 * time.Hour
	maxWait         = (1<<31 - 1) * time.Millisecond // Postgres lock_timeout is an int of milliseconds
	maxPayloadLimit = 64 << 20
	maxSweepBatch   = 1_000_000
)

// settings is a Config with defaults applied and validated.
type settings struct {
	ttl, skew, retention, wait, lease time.Duration
	inFlightMax                       time.Duration
	duplicates                        DuplicatePolicy
	limiter                           Limiter
	maxPayload, sweepBatch            int
	now                               func() time.Time
	observer                          Observer
	sealer                            Sealer
	preRead                           bool
}

func (c *Config) resolve() (settings, error) {
	if c == nil {
		c = &Config{}
	}
	s := settings{
		ttl:         cmp.Or(c.TTL, DefaultTTL),
		skew:        cmp.Or(c.ClockSkew, time.Minute),
		retention:   cmp.Or(c.TombstoneRetention, 24*time.Hour),
		wait:        cmp.Or(c.WaitLimit, 5*time.Second),
		inFlightMax: cmp.Or(c.InFlightMax, 2*time.Minute),
		lease:       c.Lease,
		duplicates:  c.Duplicates,
		limiter:     c.Limiter,
		maxPayload:  cmp.Or(c.MaxPayloadBytes, 1<<20),
		sweepBatch:  cmp.Or(c.SweepBatch, 1000),
		now:         c.Now,
		observer:    c.Observer,
		sealer:      c.Sealer,
		preRead:     c.ReplayPreRead,
	}
	if s.lease == 0 {
		s.lease = max(time.Second, min(s.inFlightMax/4, 30*time.Second))
	}
	switch {
	case s.ttl < MinTTL || s.ttl > MaxTTL:
		return s, fmt.Errorf("idem: TTL %v is outside AdCP's replay window bounds [%v, %v]", s.ttl, MinTTL, MaxTTL)
	case s.ttl%time.Second != 0:
		return s, fmt.Errorf("idem: TTL %v is not a whole number of seconds (replay_ttl_seconds is an integer)", s.ttl)
	case s.skew < 0 || s.skew > maxClockSkew:
		return s, fmt.Errorf("idem: ClockSkew %v is outside [0, %v]", s.skew, maxClockSkew)
	case s.retention < s.skew || s.retention > maxRetention:
		return s, fmt.Errorf("idem: TombstoneRetention %v is outside [ClockSkew (%v), %v]", s.retention, s.skew, maxRetention)
	case s.wait < time.Millisecond || s.wait > maxWait:
		return s, fmt.Errorf("idem: WaitLimit %v is outside [1ms, %v] (Postgres lock_timeout holds at most 2^31-1 ms)", s.wait, maxWait)
	case s.inFlightMax < time.Second || s.inFlightMax > s.ttl || s.inFlightMax%time.Second != 0:
		return s, fmt.Errorf("idem: InFlightMax %v is not a whole number of seconds in [1s, TTL (%v)] (in_flight_max_seconds is an integer no greater than replay_ttl_seconds)", s.inFlightMax, s.ttl)
	case s.lease < time.Second || s.lease > s.inFlightMax:
		return s, fmt.Errorf("idem: Lease %v is outside [1s, InFlightMax (%v)]", s.lease, s.inFlightMax)
	case s.duplicates != WaitThenReplay && s.duplicates != RejectInFlight:
		return s, fmt.Errorf("idem: unknown DuplicatePolicy %d", s.duplicates)
	case s.maxPayload < 0 || s.maxPayload > maxPayloadLimit:
		return s, fmt.Errorf("idem: MaxPayloadBytes %d is outside [1, %d]", s.maxPayload, maxPayloadLimit)
	case s.sweepBatch < 0 || s.sweepBatch > maxSweepBatch:
		return s, fmt.Errorf("idem: SweepBatch %d is outside [1, %d]", s.sweepBatch, maxSweepBatch)
	}
	if s.limiter == nil {
		s.limiter = NewLimiter(DefaultLimits)
	}
	return s, nil
}

// at is the instant a backend judges by: the test clock when one is set,
// otherwise zero (the backend's own clock).
func (s settings) at() time.Time {
	if s.now == nil {
		return time.Time{}
	}
	return s.now()
}

// Capability is the adcp.idempotency fragment of get_adcp_capabilities
// (AdCP 3.2: the IdempotencySupported branch).
type Capability struct {
	// Supported is true: this library implements the replay contract.
	Supported bool `json:"supported"`
	// ReplayTTLSeconds is Config.TTL in seconds.
	ReplayTTLSeconds int `json:"replay_ttl_seconds"`
	// InFlightMaxSeconds is Config.InFlightMax in seconds, never above
	// ReplayTTLSeconds.
	InFlightMaxSeconds int `json:"in_flight_max_seconds"`
}

func (s settings) capability() Capability {
	return Capability{Supported: true, ReplayTTLSeconds: int(s.ttl / time.Second), InFlightMaxSeconds: int(s.inFlightMax / time.Second)}
}

// state is what a stored entry means at a given instant.
type state int

const (
	stateInFlight  state = iota // a request owns the key and its lease runs
	stateCompleted              // the answer is stored and replayed
	stateExpired                // past the replay window; remembered as a tombstone
	stateReusable               // abandoned lease or tombstone past retention: free to claim
)

// classify judges an entry at now (the storage clock). Every backend's atomic
// claim must agree with it on what is reusable.
func (s settings) classify(e *backend.Entry) state {
	switch {
	case backend.Reusable(e.Response == nil, e.ExpiresAt, e.Now, s.retention):
		return stateReusable
	case e.Response == nil:
		return stateInFlight
	case !e.Now.After(e.ExpiresAt.Add(s.skew)):
		return stateCompleted
	default:
		return stateExpired
	}
}
