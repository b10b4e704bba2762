package redisstore

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/adcp-go/idempotency/idem/backend"
)

// DefaultPrefix is the key prefix of a [Store] whose Options set none.
const DefaultPrefix = "idem"

// maxPrefixLen bounds Options.Prefix.
const maxPrefixLen = 64

// scanCount is the COUNT hint of Sweep's SCAN calls.
const scanCount = 1000

// Options configures a [Store]. A nil *Options, and every zero field, means
// the default.
type Options struct {
	// Prefix starts the name of every key the store writes (see the package
	// documentation for the layout). Stores with different prefixes on one
	// Redis never see each other's entries. It may hold up to 64 letters,
	// digits and the characters _ . : - /. Defaults to "idem".
	Prefix string

	// RequireNoEviction makes [New] fail when Redis's maxmemory-policy is
	// not noeviction, that is, when Redis may evict idempotency records
	// under memory pressure. If the policy cannot be read (CONFIG is
	// disabled or not permitted, as on many managed services), New logs a
	// warning and goes on in either mode. Defaults to false: New logs a
	// warning and goes on.
	RequireNoEviction bool

	// Logger receives the warnings of [New]. Defaults to slog.Default().
	Logger *slog.Logger
}

// Store is the Redis backend. Create it with [New]; the zero value is not
// usable. A Store is safe for concurrent use, and any number of Stores, in
// any number of processes, may share one Redis.
type Store struct {
	client redis.UniversalClient
	prefix string
}

var _ backend.Backend = (*Store)(nil)

// New returns a Store on client: a single node, Sentinel or Cluster client
// (see [redis.NewUniversalClient]). The Store does not own the client;
// close it yourself when done.
//
// New reads Redis's maxmemory-policy (on every master of a Cluster). Any
// policy but noeviction lets Redis evict idempotency records, after which a
// retry runs the work again: New logs a warning, or fails if
// Options.RequireNoEviction is set. New fails if Redis cannot be reached.
func New(ctx context.Context, client redis.UniversalClient, opts *Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: New needs a Redis client")
	}
	if opts == nil {
		opts = &Options{}
	}
	prefix := cmp.Or(opts.Prefix, DefaultPrefix)
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	s := &Store{client: client, prefix: prefix}
	logger := cmp.Or(opts.Logger, slog.Default())
	if err := s.checkEviction(ctx, opts.RequireNoEviction, logger); err != nil {
		return nil, err
	}
	return s, nil
}

func checkPrefix(p string) error {
	if len(p) > maxPrefixLen {
		return fmt.Errorf("redisstore: Prefix is %d bytes long, more than %d", len(p), maxPrefixLen)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-' || c == '/') {
			return fmt.Errorf("redisstore: Prefix %q may contain only letters, digits and _ . : - /", p)
		}
	}
	return nil
}

// checkEviction reads maxmemory-policy on every master.
func (s *Store) checkEviction(ctx context.Context, require bool, logger *slog.Logger) error {
	nodes, err := s.masters(ctx)
	if err != nil {
		return fmt.Errorf("redisstore: reaching Redis: %w", err)
	}
	for _, node := range nodes {
		cfg, err := node.ConfigGet(ctx, "maxmemory-policy").Result()
		var refused redis.Error
		switch {
		case errors.As(err, &refused):
			// CONFIG is renamed, disabled or not permitted: managed Redis.
			logger.WarnContext(ctx, "redisstore: could not check Redis's maxmemory-policy; make sure it is noeviction, or Redis may evict idempotency records and a retry of an evicted key runs the work again",
				"error", err.Error())
			continue
		case err != nil:
			return fmt.Errorf("redisstore: reaching Redis: %w", err)
		}
		policy, ok := cfg["maxmemory-policy"]
		switch {
		case !ok || policy == "":
			logger.WarnContext(ctx, "redisstore: Redis did not report its maxmemory-policy; make sure it is noeviction, or Redis may evict idempotency records and a retry of an evicted key runs the work again")
		case policy == "noeviction":
		case require:
			return fmt.Errorf("redisstore: Redis's maxmemory-policy is %q, so it may evict idempotency records and a retry of an evicted key would run the work again; set it to noeviction (Options.RequireNoEviction is set)", policy)
		default:
			logger.WarnContext(ctx, "redisstore: Redis may evict idempotency records under memory pressure, and a retry of an evicted key runs the work again; set maxmemory-policy to noeviction",
				"maxmemory-policy", policy)
		}
	}
	return nil
}

// masters returns a client for each master: each shard of a Cluster or a
// Ring, or the client itself (a single node or the Sentinel master).
func (s *Store) masters(ctx context.Context) ([]redis.Cmdable, error) {
	var (
		mu    sync.Mutex
		nodes []redis.Cmdable
	)
	collect := func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		nodes = append(nodes, c)
		mu.Unlock()
		return nil
	}
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		if err := c.ForEachMaster(ctx, collect); err != nil {
			return nil, err
		}
	case *redis.Ring:
		if err := c.ForEachShard(ctx, collect); err != nil {
			return nil, err
		}
	default:
		return []redis.Cmdable{s.client}, nil
	}
	return nodes, nil
}

// key is the Redis key of ref's entry:
//
//	<prefix>:{<principal as unpadded base64url>:<key>}
//	<prefix>:{<principal as unpadded base64url>.<account as unpadded base64url>:<key>}
//
// the second when the request names an account. base64url has neither '.'
// nor ':', so the first ':' inside the braces ends the scope and no two refs
// share a key, whatever their principals and accounts hold; the braces put
// every entry of a key in one Cluster slot.
func (s *Store) key(ref backend.Ref) string {
	scope := base64.RawURLEncoding.EncodeToString([]byte(ref.Principal))
	if ref.Account != "" {
		scope += "." + base64.RawURLEncoding.EncodeToString([]byte(ref.Account))
	}
	return s.prefix + ":{" + scope + ":" + ref.Key + "}"
}

// pattern matches every entry key of this store, for SCAN.
func (s *Store) pattern() string { return s.prefix + ":{*" }

// clockMS is the clock argument of the scripts: at in milliseconds since the
// epoch, or 0 for Redis's own clock (TIME). A test clock (idem.Config.Now)
// moves leases, replay windows, tombstones and [backend.Entry].Now; Redis's own
// key expiry (PEXPIRE) keeps running on its real clock.
func clockMS(at time.Time) int64 {
	if at.IsZero() {
		return 0
	}
	return at.UnixMilli()
}

func ms(d time.Duration) int64 { return max(0, d.Milliseconds()) }

// Claim implements [backend.Backend].
func (s *Store) Claim(ctx context.Context, c backend.Claim) (*backend.Entry, error) {
	r, err := claimScript.Run(ctx, s.client, []string{s.key(c.Ref)},
		clockMS(c.At), c.Operation, hex.EncodeToString(c.Hash[:]), c.Owner, ms(c.Lease), ms(c.Retention)).Slice()
	if err != nil {
		return nil, fmt.Errorf("redisstore: claim: %w", err)
	}
	if len(r) < 2 {
		return nil, fmt.Errorf("redisstore: claim: unexpected reply %v", r)
	}
	if r[0] == int64(1) {
		return nil, nil
	}
	e, err := parseEntry(r[1:])
	if err == nil && e == nil {
		err = errors.New("no entry in a refused claim")
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: claim: %w", err)
	}
	return e, nil
}

// Complete implements [backend.Backend].
func (s *Store) Complete(ctx context.Context, c backend.Completion) error {
	response := c.Response
	if response == nil {
		response = []byte("null")
	}
	n, err := completeScript.Run(ctx, s.client, []string{s.key(c.Ref)},
		clockMS(c.At), c.Owner, response, ms(c.TTL), ms(c.Retention)).Int()
	if err != nil {
		return fmt.Errorf("redisstore: complete: %w", err)
	}
	if n != 1 {
		return backend.ErrNotOwner
	}
	return nil
}

// Renew implements [backend.Backend].
func (s *Store) Renew(ctx context.Context, r backend.Renewal) error {
	n, err := renewScript.Run(ctx, s.client, []string{s.key(r.Ref)},
		clockMS(r.At), r.Owner, ms(r.Lease), ms(r.Retention)).Int()
	if err != nil {
		return fmt.Errorf("redisstore: renew: %w", err)
	}
	if n != 1 {
		return backend.ErrNotOwner
	}
	return nil
}

// Release implements [backend.Backend].
func (s *Store) Release(ctx context.Context, ref backend.Ref, owner string) error {
	n, err := releaseScript.Run(ctx, s.client, []string{s.key(ref)}, owner).Int()
	if err != nil {
		return fmt.Errorf("redisstore: release: %w", err)
	}
	if n != 1 {
		return backend.ErrNotOwner
	}
	return nil
}

// Get implements [backend.Backend].
func (s *Store) Get(ctx context.Context, ref backend.Ref, at time.Time) (*backend.Entry, error) {
	r, err := getScript.Run(ctx, s.client, []string{s.key(ref)}, clockMS(at)).Slice()
	if err != nil {
		return nil, fmt.Errorf("redisstore: get: %w", err)
	}
	e, err := parseEntry(r)
	if err != nil {
		return nil, fmt.Errorf("redisstore: get: %w", err)
	}
	return e, nil
}

// parseEntry reads {now} (no entry) or {now, exp, op, hash, resp|nil}.
func parseEntry(r []any) (*backend.Entry, error) {
	if len(r) == 0 {
		return nil, errors.New("empty reply")
	}
	now, ok := r[0].(int64)
	if !ok {
		return nil, fmt.Errorf("unexpected clock %T in the reply", r[0])
	}
	if len(r) == 1 {
		return nil, nil
	}
	if len(r) != 5 {
		return nil, fmt.Errorf("unexpected reply of %d values", len(r))
	}
	exp, ok1 := r[1].(int64)
	op, ok2 := r[2].(string)
	hash, ok3 := r[3].(string)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("malformed entry %v", r)
	}
	e := &backend.Entry{Operation: op, ExpiresAt: time.UnixMilli(exp).UTC(), Now: time.UnixMilli(now).UTC()}
	if n, err := hex.Decode(e.Hash[:], []byte(hash)); err != nil || n != len(e.Hash) {
		return nil, fmt.Errorf("malformed request hash %q in the entry", hash)
	}
	switch resp := r[4].(type) {
	case nil: // in flight
	case string:
		e.Response = []byte(resp) // never nil, even when empty: completed
	default:
		return nil, fmt.Errorf("unexpected response %T in the entry", r[4])
	}
	return e, nil
}

// Sweep implements [backend.Backend]. Redis deletes entries by itself (every
// entry carries a TTL of lease or replay window plus retention), so
// production code need not call it. It exists for the cases Redis's expiry
// cannot see, such as a test clock (idem.Config.Now): it scans this
// store's keys (SCAN on every master) and deletes, one script per key, those
// whose ExpiresAt lies more than retention in the past, at most limit of
// them. Its cost grows with the size of the whole keyspace.
func (s *Store) Sweep(ctx context.Context, r backend.SweepRequest) (int, error) {
	retention, limit := r.Retention, r.Limit
	if limit <= 0 {
		return 0, nil
	}
	nodes, err := s.masters(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisstore: sweep: %w", err)
	}
	deleted := 0
	for _, node := range nodes {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, s.pattern(), scanCount).Result()
			if err != nil {
				return deleted, fmt.Errorf("redisstore: sweep: %w", err)
			}
			for len(keys) > 0 && deleted < limit {
				// Never try more keys than may still be deleted, so that
				// the total stays within limit.
				batch := keys[:min(len(keys), limit-deleted)]
				keys = keys[len(batch):]
				n, err := s.sweepKeys(ctx, batch, retention, clockMS(r.At))
				deleted += n
				if err != nil {
					return deleted, fmt.Errorf("redisstore: sweep: %w", err)
				}
			}
			if deleted >= limit {
				return deleted, nil
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return deleted, nil
}

// sweepKeys runs the sweep script on each key, in one pipeline through the
// top-level client (which routes each key to its Cluster slot).
func (s *Store) sweepKeys(ctx context.Context, keys []string, retention time.Duration, clock int64) (int, error) {
	cmds := make([]*redis.Cmd, len(keys))
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			// EVAL rather than EVALSHA: a pipeline cannot fall back on
			// NOSCRIPT, and the sweep is a background job.
			cmds[i] = sweepScript.Eval(ctx, p, []string{k}, clock, ms(retention))
		}
		return nil
	})
	n := 0
	for _, c := range cmds {
		if v, err := c.Int(); err == nil && v == 1 {
			n++
		}
	}
	return n, err
}
