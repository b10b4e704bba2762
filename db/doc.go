// Package db is the typed query layer that sqlc generates from the SQL in
// ../queries against the schema in ../migrations. Every file here except this
// one is generated: never edit them, change the SQL and run `make generate`.
// `make verify` fails when they differ from what sqlc produces.
//
// Conventions of the SQL: every query that reads the clock takes an optional
// "now" parameter; NULL means the database clock (now()), which is what
// production uses, while tests pass a fixed instant so that they never sleep
// through a TTL. Durations travel as milliseconds. Every method takes its
// executor (pool, connection or transaction) as an argument, so a call made
// inside a transaction cannot silently run on another connection.
//
// This package is an implementation detail of package idem; its API may
// change in any release.
package db
