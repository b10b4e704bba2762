// Package integration tests the library against real Postgres (and Redis)
// started by testcontainers-go. It is a module of its own so that users of the
// library never inherit its test dependencies.
//
// Run it with `make test` from the repository root. Environment:
//
//	IDEM_TEST_POSTGRES_IMAGE  Postgres image (default postgres:17-alpine)
//	IDEM_TEST_REDIS_IMAGE     Redis image (default redis:7-alpine)
//	TEST_DATABASE_URL         use this server instead of starting a container
//	IDEM_REQUIRE_DOCKER=1     fail, rather than skip, when no database can be had (CI sets it)
package integration
