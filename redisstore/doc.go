// Package redisstore is a [backend.Backend] on Redis (github.com/redis/go-redis/v9),
// for sellers that run several processes and keep their business data
// outside Postgres. Create a [Store] with [New] on a single node, Sentinel or
// Cluster client, and run handlers through idem.NewGuard and idem.Wrap or
// idem.Do (see the Example).
//
// # What a crash does
//
// Redis cannot commit together with the business database. A request
// claims its key (one step), runs the handler, whose business write commits
// on its own, and then stores the answer (another step). If the process
// dies, or Redis cannot be reached, between the business commit and the
// stored answer, the claim stays until its lease ends (idem.Config.Lease,
// default 2 minutes), and the retry after that runs the work again. When
// that matters and the work is in Postgres, use idem.RunInTx: it commits
// the claim, the business write and the answer in one transaction.
//
// Otherwise make the business write refuse a second execution: give it a
// value derived from the idempotency key, unique per principal, in a UNIQUE
// column (or, for an external API, as that API's own idempotency or client
// reference). A second execution then fails on the constraint, or finds the
// first one's row and answers with it, instead of creating a duplicate:
//
//	CREATE TABLE media_buys (
//		id bigserial PRIMARY KEY,
//		principal text NOT NULL,
//		idempotency_key text NOT NULL,
//		budget int NOT NULL,
//		UNIQUE (principal, idempotency_key)
//	);
//
//	-- in the handler, with idem.PrincipalFrom(ctx) and the request's key:
//	INSERT INTO media_buys (principal, idempotency_key, budget) VALUES ($1, $2, $3)
//	ON CONFLICT (principal, idempotency_key) DO UPDATE SET budget = media_buys.budget
//	RETURNING id, budget
//
// Redis keeps the records only as well as it is configured to, and each
// loss turns a retry into a second execution, which the UNIQUE column above
// also catches:
//
//   - eviction: any maxmemory-policy but noeviction lets Redis drop records
//     under memory pressure. [New] checks the policy and warns, or refuses
//     with Options.RequireNoEviction.
//   - persistence: without AOF a restart forgets every key.
//   - failover: replication is asynchronous, so a promoted replica may lack
//     the last claims and answers the old master acknowledged.
//
// # How entries are stored
//
// Each entry is one Redis hash, changed only by Lua scripts that each touch
// that one key, so every step (claim, complete, release, sweep) is atomic
// on a single node, under Sentinel and in a Cluster. Its key is
//
//	<prefix>:{<principal, unpadded base64url>:<idempotency key>}
//
// The principal is encoded because it is an arbitrary string: base64url
// has no ':' (nor braces), so ("ali", "ce:x") and ("alice", ":x") never meet.
// The braces are a Cluster hash tag around the whole per-entry part:
// entries spread over all slots by (principal, key), and a second key per
// entry, should one ever be needed, would share the tag and so the slot, as
// a multi-key script requires. The fields are op, hash (hex), owner, exp
// (ExpiresAt, milliseconds since the epoch) and, once completed, resp.
//
// Renew, Complete and Release compare the owner token inside the script: a request
// whose lease ended and whose key was taken over gets [backend.ErrNotOwner] and
// changes nothing. go-redis resends a command whose reply was lost
// (Options.MaxRetries), so the scripts recognise their own earlier effect: a
// claim resent by its owner, or a completion resent by its owner with the
// same answer, succeeds again instead of finding the key held.
//
// # Clock and expiry
//
// Redis's clock (TIME, read inside each script) decides leases, the replay
// window and tombstones, and is the [backend.Entry].Now the core judges by;
// the application's clock never is. A test clock (idem.Config.Now) replaces
// it, for tests only.
//
// Every entry carries a Redis TTL: an in-flight entry expires lease +
// retention after its claim, a completed one TTL + retention after its
// completion (the tombstone retention, during which a retry gets
// IDEMPOTENCY_EXPIRED). Redis deletes them by itself, so production code
// need not call idem.Guard.Sweep; [Store.Sweep] works (it scans the
// keyspace) and serves test clocks that Redis's own expiry cannot see.
//
// # Client settings
//
// Set ContextTimeoutEnabled in the go-redis options so that context
// deadlines bound each call; ReadTimeout and WriteTimeout bound how long a
// request waits for an unreachable Redis before failing with
// idem.ErrStorage. Redis 5 or later is required (scripts are replicated
// by their effects, which lets them read TIME before writing); the tests
// run on Redis 7.
package redisstore
