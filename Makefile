# Developer entry points. `make test` is what CI runs (see .ci/run).

SQLC_VERSION := v1.31.1
BIN          := $(CURDIR)/bin
SQLC         := $(BIN)/sqlc-$(SQLC_VERSION)
GO           ?= go
SHELL        := /bin/bash

.PHONY: all test unit integration vet verify generate fuzz compliance assessment run dashboard clean

all: verify test

## test: vet, then unit tests and integration tests (real Postgres and Redis
## through testcontainers-go), all under the race detector.
test: vet unit integration

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

## MODULES: every module of the repository (go.work ties them together);
## LIB_MODULES are those whose unit tests need no Docker.
MODULES     := . migrations redisstore adcpmcp adcpa2a httpsig idemotel webhook webhook/riverdelivery cmd/adcp-seller integration
LIB_MODULES := $(filter-out integration,$(MODULES))

vet:
	@set -e; for m in $(MODULES); do echo "vet $$m"; (cd $$m && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...); done
	cd integration && $(GO) vet -tags compliance ./... && $(GO) vet -tags chaos ./... && $(GO) run $(STATICCHECK) -tags compliance ./...
	@unformatted=$$(gofmt -l .); [ -z "$$unformatted" ] || { echo "gofmt: these files need formatting:"; echo "$$unformatted"; exit 1; }
	@set -e; for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) mod tidy -diff >/dev/null) || \
		{ echo "$$m: go.mod/go.sum are not tidy (run GOWORK=off go mod tidy there)"; exit 1; }; done

## unit also runs the allocation tests, which build without -race only
## (the race detector's instrumentation allocates).
unit:
	@set -e; for m in $(LIB_MODULES); do (cd $$m && $(GO) test -race -count=1 ./...); done
	$(GO) test -count=1 -run Allocations ./adcp

## integration: the full log goes to integration.log; a skipped test fails the run.
integration:
	set -o pipefail; cd integration && $(GO) test -race -count=1 -v ./... 2>&1 | tee $(CURDIR)/integration.log | \
		grep -E '^(--- |ok|FAIL|panic)|integration:|Container (created|ready)'
	@! grep -q -- '--- SKIP' integration.log || { echo "integration: skipped tests count as failures"; exit 1; }
	@! grep -q 'integration: SKIP' integration.log || { echo "integration: no database; set IDEM_REQUIRE_DOCKER=1 to fail early"; exit 1; }

# sqlc's inputs and outputs (see sqlc.yaml); each output folder keeps a
# hand-written doc.go and nothing else that is not generated.
SQLC_INPUTS  := sqlc.yaml migrations queries cmd/adcp-seller/seller/schema cmd/adcp-seller/seller/queries
SQLC_OUTPUTS := db cmd/adcp-seller/seller/sellerdb

## run: the reference seller (memory storage; see cmd/adcp-seller for flags).
run:
	$(GO) run ./cmd/adcp-seller -dev

## compliance: the official AdCP storyboards against the reference seller, in
## memory mode and in Postgres mode (testcontainers), over MCP and over A2A, the
## four at once; fails on any failed step and any skip that is not a documented
## runner limitation (docs/COMPLIANCE.md).
PEER_DIR ?= $(abspath ../shared/peer)
compliance:
	$(PEER_DIR)/setup
	set -o pipefail; cd integration && ADCP_PEER_DIR=$(PEER_DIR) $(GO) test -tags compliance -count=1 -v -parallel 4 -timeout 30m -run TestComplianceStoryboard ./... 2>&1 | \
		tee $(CURDIR)/compliance.log | grep -E '^\s*(--- |ok|FAIL)|storyboard|passed|failed|skipped'

## assessment: the runner's full assessment (no storyboard id: the runner
## picks the storyboards from the seller's capabilities) against the seller
## in memory; fails on any failed step that docs/COMPLIANCE.md does not
## document as the runner's. About 4 minutes; not part of test or compliance.
## The runner's JSON and the docs table go to assessment-out/.
assessment:
	$(PEER_DIR)/setup
	set -o pipefail; cd integration && IDEM_REQUIRE_DOCKER=1 ADCP_PEER_DIR=$(PEER_DIR) ADCP_ASSESSMENT_OUT=$(CURDIR)/assessment-out $(GO) test -tags compliance -count=1 -v -timeout 30m -run TestAssessment ./... 2>&1 | \
		tee $(CURDIR)/assessment.log | grep -E '^\s*(--- |ok|FAIL)|assessment|step failed|add up|\|'

## dashboard: re-render docs/grafana/idempotency-dashboard-under-load.svg from a
## real run: the seller on Postgres, the peer kit's load.mjs, /metrics scraped.
dashboard:
	PEER_DIR=$(PEER_DIR) scripts/dashboard-under-load.sh

## generate: regenerate the sqlc output from scratch with the pinned sqlc.
generate: $(SQLC)
	find $(SQLC_OUTPUTS) -name '*.go' ! -name doc.go -delete
	$(SQLC) generate

## verify: fail when the committed sqlc output differs from what the pinned
## sqlc generates.
verify: $(SQLC)
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
		tar -c $(SQLC_INPUTS) $(addsuffix /doc.go,$(SQLC_OUTPUTS)) | tar -x -C $$tmp && \
		(cd $$tmp && $(SQLC) generate) && \
		for d in $(SQLC_OUTPUTS); do diff -r $$d $$tmp/$$d || { echo "verify: $$d differs from sqlc output; run make generate"; exit 1; }; done && \
		echo "verify: $(SQLC_OUTPUTS) are exactly what sqlc $(SQLC_VERSION) generates"

$(SQLC):
	@mkdir -p $(BIN)
	@echo "installing sqlc $(SQLC_VERSION) into $(BIN) (about 1.5 min)"
	GOBIN=$(BIN) $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)
	mv $(BIN)/sqlc $(SQLC)

## fuzz: run each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./idem/internal/jcs -run '^$$' -fuzz FuzzCanonicalize -fuzztime $(FUZZTIME)

## bench: the benchmark suite of docs/BENCHMARKS.md: canonical hash,
## memstore and the seller's MCP path in memory (no Docker), then the
## Postgres paths against a stock Postgres
## container (testcontainers, as in `make integration`). Raw `go test -bench`
## output goes to $(BENCH_OUT)/; the ratio table is printed at the end and
## saved as $(BENCH_OUT)/ratios.md, the growth plots drawn into
## $(BENCH_OUT)/plots/ (docs/plots/ comes from `make plots`). BENCH_COUNT is the -count of the CPU
## benchmarks and the rounds of the Postgres comparisons (which run their
## sides in turn). About 14 minutes on 2 cores before the growth benchmark
## covered c=4 and replays; its part alone now took 10 minutes on busy cores
## (2026-12-02), 3-7 of them filling the 10M-row table (BENCH_ROWS=1000000
## skips it). Never under -race, and none
## of it runs in `make test`.
.PHONY: bench
BENCH_OUT   ?= bench-out
BENCH_COUNT ?= 5
BENCH_ROWS  ?= 1000000,10000000
BENCH_SWEEP_ROWS ?= 1000000
bench:
	@mkdir -p $(BENCH_OUT)
	set -o pipefail; cd integration && $(GO) test -run '^$$' -bench CanonicalHash -benchmem -benchtime 500ms -count $(BENCH_COUNT) | tee $(CURDIR)/$(BENCH_OUT)/canonical.txt
	set -o pipefail; $(GO) test ./memstore -run '^$$' -bench MemstoreDo -benchmem -benchtime 500ms -count $(BENCH_COUNT) | tee $(BENCH_OUT)/memstore.txt
	set -o pipefail; $(GO) test ./memstore -run '^$$' -bench MemstoreParallel -benchmem -benchtime 500ms -cpu 1,2 -count $(BENCH_COUNT) | tee -a $(BENCH_OUT)/memstore.txt
	set -o pipefail; $(GO) test ./memstore -run '^$$' -bench 'MemstoreSealed|MemstoreKeyedRead' -benchmem -benchtime 200ms -count $(BENCH_COUNT) | tee $(BENCH_OUT)/sealed.txt
	set -o pipefail; $(GO) test ./memstore -run '^$$' -bench MemstoreBytesPerEntry -benchtime 1x -count 3 | tee $(BENCH_OUT)/entrysize.txt
	set -o pipefail; cd cmd/adcp-seller && $(GO) test ./seller -run '^$$' -bench SellerMCP -benchmem -benchtime 500ms -count $(BENCH_COUNT) | tee $(CURDIR)/$(BENCH_OUT)/sellermcp.txt
	set -o pipefail; cd integration && IDEM_BENCH_ROUNDS=$(BENCH_COUNT) $(GO) test -run '^$$' -bench 'PostgresRoundTrip|PostgresMiss|PostgresReplay' -timeout 60m 2>&1 | tee $(CURDIR)/$(BENCH_OUT)/postgres.txt
	set -o pipefail; cd integration && $(GO) test -run '^$$' -bench 'PostgresWALRecords' -benchtime 1x -timeout 60m 2>&1 | tee $(CURDIR)/$(BENCH_OUT)/walrecords.txt
	set -o pipefail; cd integration && IDEM_BENCH_ROUNDS=3 IDEM_BENCH_ROWS=$(BENCH_ROWS) $(GO) test -run '^$$' -bench PostgresGrowth -timeout 60m 2>&1 | tee $(CURDIR)/$(BENCH_OUT)/growth.txt
	set -o pipefail; cd integration && IDEM_BENCH_SWEEP_ROWS=$(BENCH_SWEEP_ROWS) $(GO) test -run '^$$' -bench PostgresSweep -benchtime 1x -count 3 -timeout 60m 2>&1 | tee $(CURDIR)/$(BENCH_OUT)/sweep.txt
	$(GO) run scripts/benchratio.go $(BENCH_OUT)/canonical.txt $(BENCH_OUT)/memstore.txt $(BENCH_OUT)/postgres.txt \
		$(BENCH_OUT)/growth.txt $(BENCH_OUT)/sweep.txt | tee $(BENCH_OUT)/ratios.md
	@mkdir -p $(BENCH_OUT)/plots
	$(GO) run scripts/benchplot.go -growth $(BENCH_OUT)/growth.txt -entrysize $(BENCH_OUT)/entrysize.txt -o $(BENCH_OUT)/plots

## plots: the growth benchmarks alone (BenchmarkPostgresGrowth at 0,
## BENCH_ROWS rows and c=1,4,16; BenchmarkMemstoreBytesPerEntry), with the
## load average sampled meanwhile, then the SVG plots of docs/BENCHMARKS.md
## drawn from them into docs/plots/ (raw output in docs/plots/data/). About
## 10 minutes on 2 cores with the default sizes; see scripts/growth-bench.sh.
.PHONY: plots
plots:
	BENCH_ROWS=$(BENCH_ROWS) GO=$(GO) scripts/growth-bench.sh

## reliability: the reliability suite of docs/RELIABILITY.md at full size
## (-tags chaos): crash matrices with 20 SIGKILLs per crash point, 20
## terminated sessions per step, 5 Postgres stop and kill cycles, 20 storm
## rounds, all under -race; then the 10-minute soak (SOAK) without -race, so
## that its memory figures are a production build's; then each fuzz target
## for FUZZTIME. Every step runs even if an earlier one failed; the target
## fails at the end if any did. Result lines ("RELIABILITY ...") are printed
## and collected in $(RELIABILITY_OUT)/figures.txt, full logs beside them.
## IDEM_RELIABILITY_* variables resize any part (see
## integration/reliability_test.go). About 15 minutes on 2 cores. `make test`
## runs the same tests at a bounded size.
.PHONY: reliability
RELIABILITY_OUT ?= reliability-out
SOAK ?= 10m
reliability:
	@mkdir -p $(RELIABILITY_OUT) && rm -f $(RELIABILITY_OUT)/figures.txt $(RELIABILITY_OUT)/fuzz.log
	cd integration && $(GO) vet -tags chaos ./...
	@set -o pipefail; out=$(abspath $(RELIABILITY_OUT)); failed=""; \
	show() { tee "$$1" | grep -E '^(--- |ok|FAIL|panic)|RELIABILITY'; }; \
	(cd integration && IDEM_RELIABILITY_FIGURES=$$out/figures.txt $(GO) test -race -tags chaos -count=1 -v -timeout 60m \
		-run '^TestReliability' -skip '^TestReliabilitySoak$$' ./... 2>&1 | show $$out/chaos.log) || failed="$$failed chaos"; \
	(cd integration && IDEM_RELIABILITY_FIGURES=$$out/figures.txt IDEM_RELIABILITY_SOAK=$(SOAK) $(GO) test -tags chaos -count=1 -v -timeout 60m \
		-run '^TestReliabilitySoak$$' ./... 2>&1 | show $$out/soak.log) || failed="$$failed soak"; \
	for target in idem:FuzzValidateKey idem:FuzzPrepare idem/internal/jcs:FuzzCanonicalize adcpmcp:FuzzMutatingArguments adcpa2a:FuzzA2ARequest httpsig:FuzzParseSignatureHeaders webhook:FuzzCheckURL; do \
		pkg=$${target%%:*}; fn=$${target#*:}; dir=.; case $$pkg in adcpmcp|adcpa2a|httpsig|webhook) dir=$$pkg; pkg=.;; esac; echo "fuzz $$pkg $$fn for $(FUZZTIME)"; \
		(cd $$dir && $(GO) test ./$$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) 2>&1 | tee -a $$out/fuzz.log | tail -3) || failed="$$failed $$fn"; \
	done; \
	if [ -n "$$failed" ]; then echo "reliability: failed:$$failed (logs in $(RELIABILITY_OUT)/)"; exit 1; fi; \
	echo "reliability: all passed; figures in $(RELIABILITY_OUT)/figures.txt"

clean:
	rm -rf $(BIN) integration.log
