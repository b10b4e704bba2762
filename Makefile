# Developer entry points. `make test` is what CI runs (see .ci/run).

SQLC_VERSION := v1.31.1
BIN          := $(CURDIR)/bin
SQLC         := $(BIN)/sqlc-$(SQLC_VERSION)
GO           ?= go
SHELL        := /bin/bash

.PHONY: all test unit integration vet verify generate fuzz clean

all: verify test

## test: vet, then unit tests and integration tests (real Postgres and Redis
## through testcontainers-go), all under the race detector.
test: vet unit integration

vet:
	$(GO) vet ./...
	cd integration && $(GO) vet ./...
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt: the files above need formatting"; exit 1; }

unit:
	$(GO) test -race -count=1 ./...

## integration: the full log goes to integration.log; a skipped test fails the run.
integration:
	set -o pipefail; cd integration && $(GO) test -race -count=1 -v ./... 2>&1 | tee $(CURDIR)/integration.log | \
		grep -E '^(--- |ok|FAIL|panic)|integration:|Container (created|ready)'
	@! grep -q -- '--- SKIP' integration.log || { echo "integration: skipped tests count as failures"; exit 1; }
	@! grep -q 'integration: SKIP' integration.log || { echo "integration: no database; set IDEM_REQUIRE_DOCKER=1 to fail early"; exit 1; }

## generate: regenerate db/ from queries/ and migrations/ with the pinned sqlc.
generate: $(SQLC)
	find db -name '*.go' ! -name doc.go -delete
	$(SQLC) generate

## verify: fail when db/ differs from what the pinned sqlc generates.
verify: $(SQLC)
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
		cp -r sqlc.yaml migrations queries $$tmp/ && mkdir $$tmp/db && \
		(cd $$tmp && $(SQLC) generate) && cp db/doc.go $$tmp/db/ && \
		if diff -r db $$tmp/db; then echo "verify: db/ is exactly what sqlc $(SQLC_VERSION) generates"; \
		else echo "verify: db/ differs from sqlc output; run make generate"; exit 1; fi

$(SQLC):
	@mkdir -p $(BIN)
	@echo "installing sqlc $(SQLC_VERSION) into $(BIN) (about 1.5 min)"
	GOBIN=$(BIN) $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)
	mv $(BIN)/sqlc $(SQLC)

## fuzz: run each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./idem -run '^$$' -fuzz FuzzCanonicalize -fuzztime $(FUZZTIME)

clean:
	rm -rf $(BIN) integration.log
