package redisstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/adcp-go/idempotency/idem"
)

// Limiter is an idem.Limiter whose token buckets live in Redis, so that
// every replica shares one budget per (principal, account) for writes and
// one for reads. Each Allow is one script on one key, judged by Redis's
// clock. Create it with [NewLimiter]; it is safe for concurrent use.
type Limiter struct {
	client redis.UniversalClient
	prefix string
	limits idem.Limits
}

// NewLimiter returns a Limiter on client with the given limits, its keys
// under prefix (see [Options].Prefix; "" means [DefaultPrefix]). It panics
// if a rate or burst is not positive, like idem.NewLimiter.
func NewLimiter(client redis.UniversalClient, prefix string, limits idem.Limits) (*Limiter, error) {
	if client == nil {
		return nil, fmt.Errorf("redisstore: NewLimiter needs a Redis client")
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	idem.NewLimiter(limits) // validates the limits the same way
	return &Limiter{client: client, prefix: prefix, limits: limits}, nil
}

// key is the Redis key of a budget's bucket:
// <prefix>:rate:{<w|r>:<principal as base64url>.<account as base64url>}.
func (l *Limiter) key(b idem.Budget) string {
	kind := "w"
	if b.Read {
		kind = "r"
	}
	return l.prefix + ":rate:{" + kind + ":" + base64.RawURLEncoding.EncodeToString([]byte(b.Principal)) +
		"." + base64.RawURLEncoding.EncodeToString([]byte(b.Account)) + "}"
}

// takeScript: ARGV = rate per second, burst. Takes a token and returns 0,
// or returns the milliseconds until one is there. The bucket expires once
// it would be full again, so idle budgets cost nothing.
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
	tokens = tokens - 1
else
	wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(burst * 1000 / rate) + 1000))
return wait
`)

// Allow implements idem.Limiter. A Redis failure is an error: the request
// is then answered as a storage failure, never let through unlimited.
func (l *Limiter) Allow(ctx context.Context, b idem.Budget) (bool, time.Duration, error) {
	r := l.limits.Writes
	if b.Read {
		r = l.limits.Reads
	}
	wait, err := takeScript.Run(ctx, l.client, []string{l.key(b)},
		strconv.FormatFloat(r.PerSecond, 'f', -1, 64), strconv.Itoa(r.Burst)).Int64()
	if err != nil {
		return false, 0, fmt.Errorf("redisstore: rate limit: %w", err)
	}
	if wait <= 0 {
		return true, 0, nil
	}
	return false, time.Duration(wait) * time.Millisecond, nil
}
