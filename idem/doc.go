// Package idem makes mutating requests idempotent the way the Ad Context
// Protocol (AdCP) requires: each (principal, idempotency_key) runs at most
// once, and retries get the stored answer.
//
// # The problem
//
// A buyer whose create_media_buy timed out retries with the same key. If the
// first attempt did commit, running the work again books a second media buy
// and fires a second webhook. Caching the response is not enough: if the
// business write commits and the process dies before the cache write, the
// retry runs the work again. The claim on the key, the business writes and
// the stored response must commit together.
//
// # Postgres: RunInTx
//
// [RunInTx] claims the key inside the caller's transaction, runs the handler
// with that same pgx.Tx, stores the response on the claimed row and commits
// once. A crash at any point before the commit leaves nothing behind, so the
// retry runs the work exactly once; a crash after it leaves the stored answer,
// so the retry replays it. Concurrent retries serialise on the key's unique
// index. Create the table with package migrations.
//
// # Other storage: Guard, Do and Wrap
//
// A [Guard] runs any handler idempotently on a backend that cannot commit
// with the business data (package memstore in process, package redisstore,
// or [PostgresBackend]; package idem/backend is the interface, for people
// who write one). There, a claim is a lease owned by a token, and the
// business write and the stored answer are two steps: see the package
// documentation of each backend for what a crash between them does.
//
// # AdCP semantics
//
// Keys must match ^[A-Za-z0-9_.:-]{16,255}$ ([ValidateKey]). Requests are
// compared by the SHA-256 of their RFC 8785 canonical form without the
// fields AdCP excludes ([CanonicalJSONSHA256]) and by operation. A different
// request under a used key is [ErrConflict]; a key past the replay window is
// [ErrExpired] while its tombstone is kept; a duplicate that cannot wait is
// [ErrInFlight]; too many new keys is [ErrRateLimited]. Handler errors are
// never cached. Every error maps to its AdCP code in one place ([Wire]).
// [Store.Capability] and [Guard.Capability] give the adcp.idempotency
// fragment of get_adcp_capabilities.
//
// Keys are scoped by principal, which must be the authenticated caller: one
// principal never sees, replays or conflicts with another's keys. A missing
// principal is an error, never a shared namespace.
package idem
