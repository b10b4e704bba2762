package redisstore

import "github.com/redis/go-redis/v9"

// The scripts below are the store's only writes. Each touches exactly one
// key, KEYS[1], an entry hash with the fields
//
//	op     the operation that claimed the key
//	hash   the request's canonical hash, hex
//	owner  the owner token of the claim (kept once completed, so that a
//	       completion resent after a lost reply is recognised)
//	exp    ExpiresAt in milliseconds since the epoch, on the Redis clock:
//	       the end of the lease while in flight, of the replay window once
//	       completed
//	at     when the key was claimed (milliseconds): the replay window
//	       counts from it
//	resp   the stored answer; absent while in flight
//
// Every script that needs the time reads it from Redis (TIME), unless
// ARGV[1], a test clock in milliseconds since the epoch, is not 0. Numbers
// are written with '%d' so that large millisecond values never turn into
// exponent notation.

// nowMS is the prelude that sets now, in milliseconds: ARGV[1], or TIME.
const nowMS = `
local now = tonumber(ARGV[1])
if now == 0 then
	local t = redis.call('TIME')
	now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// claimScript: ARGV = clock, operation, hash, owner, lease ms, retention
// ms. Returns {1, now} when the key is taken for owner, or {0, now, exp, op,
// hash, resp|false} with the entry that holds it. The takeover rule is
// backend.Reusable: an in-flight entry past its lease, a completed one past
// exp + retention. A claim resent by the same owner after a lost reply finds
// its own live claim and succeeds again.
var claimScript = redis.NewScript(nowMS + `
local e = redis.call('HMGET', KEYS[1], 'exp', 'op', 'hash', 'resp', 'owner')
if e[1] then
	local exp = tonumber(e[1])
	if e[4] then
		if now <= exp + tonumber(ARGV[6]) then
			return {0, now, exp, e[2], e[3], e[4]}
		end
	elseif now <= exp then
		if e[5] == ARGV[4] then
			return {1, now}
		end
		return {0, now, exp, e[2], e[3], false}
	end
end
local lease = tonumber(ARGV[5])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'op', ARGV[2], 'hash', ARGV[3], 'owner', ARGV[4], 'exp', string.format('%d', now + lease), 'at', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(1, lease + tonumber(ARGV[6]))))
return {1, now}
`)

// completeScript: ARGV = clock, owner, response, ttl ms, retention ms.
// Returns 1 when the answer is stored, replayed for ttl from the claim,
// 0 when owner does not own the in-flight entry. A completion resent by the same owner with the same
// answer after a lost reply finds it stored and succeeds again.
var completeScript = redis.NewScript(nowMS + `
local e = redis.call('HMGET', KEYS[1], 'owner', 'resp', 'at')
if e[1] ~= ARGV[2] then
	return 0
end
if e[2] then
	if e[2] == ARGV[3] then
		return 1
	end
	return 0
end
local exp = tonumber(e[3] or now) + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'resp', ARGV[3], 'exp', string.format('%d', exp))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(1, exp - now + tonumber(ARGV[5]))))
return 1
`)

// renewScript: ARGV = clock, owner, lease ms, retention ms. Extends the
// lease of the in-flight entry to now + lease and returns 1 if owner owns
// it; returns 0 otherwise.
var renewScript = redis.NewScript(nowMS + `
local e = redis.call('HMGET', KEYS[1], 'owner', 'resp')
if e[1] ~= ARGV[2] or e[2] then
	return 0
end
local lease = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'exp', string.format('%d', now + lease))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(1, lease + tonumber(ARGV[4]))))
return 1
`)

// releaseScript: ARGV = owner. Deletes the entry and returns 1 if owner owns
// it in flight; returns 0 otherwise.
var releaseScript = redis.NewScript(`
local e = redis.call('HMGET', KEYS[1], 'owner', 'resp')
if e[1] ~= ARGV[1] or e[2] then
	return 0
end
redis.call('DEL', KEYS[1])
return 1
`)

// getScript: ARGV = clock. Returns {now} when there is no entry, or {now,
// exp, op, hash, resp|false}. Read-only; a script only for the Redis clock.
var getScript = redis.NewScript(nowMS + `
local e = redis.call('HMGET', KEYS[1], 'exp', 'op', 'hash', 'resp')
if not e[1] then
	return {now}
end
return {now, tonumber(e[1]), e[2], e[3], e[4]}
`)

// sweepScript: ARGV = clock, retention ms. Deletes the entry and returns 1
// if its exp lies more than retention in the past; returns 0 otherwise, and
// for any key that is not an entry hash.
var sweepScript = redis.NewScript(nowMS + `
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
	return 0
end
local exp = redis.call('HGET', KEYS[1], 'exp')
if not exp then
	return 0
end
if now > tonumber(exp) + tonumber(ARGV[2]) then
	redis.call('DEL', KEYS[1])
	return 1
end
return 0
`)
