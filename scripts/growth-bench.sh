#!/usr/bin/env bash
# growth-bench.sh: the growth figures of docs/BENCHMARKS.md and their plots.
# Runs memstore's BenchmarkMemstoreBytesPerEntry and the integration
# module's BenchmarkPostgresGrowth (a Postgres container through
# testcontainers, as `make bench` does), samples the load average every
# 15 s meanwhile, then draws the SVG plots with scripts/benchplot.go.
#
#   scripts/growth-bench.sh                       # or: make plots
#   BENCH_ROWS=1000000,10000000,100000000 scripts/growth-bench.sh
#
# Environment:
#   BENCH_ROWS     table sizes besides the empty table (default 1000000,10000000;
#                  100M rows take ~45 GB of disk, see docs/BENCHMARKS.md)
#   GROWTH_C       concurrencies (default 1,4,16)
#   ROUNDS         rounds of the growth sub-benchmarks (default 3)
#   OUT            where the raw output and the plots go (default docs/plots:
#                  raw go test output in $OUT/data, SVGs in $OUT)
#   NOTE           a line printed under each plot's title (for instance what
#                  else ran on the machine)
#   PLOT_ONLY=1    skip the benchmarks and redraw the plots from $OUT/data
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-docs/plots}
mkdir -p "$OUT/data"
OUT=$(cd "$OUT" && pwd)
GO=${GO:-go}

if [[ -z ${PLOT_ONLY:-} ]]; then
	: >"$OUT/data/loadavg.txt"
	(while :; do echo "$(date -u +%FT%TZ) $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/data/loadavg.txt"; sleep 15; done) &
	sampler=$!
	trap 'kill "$sampler"' EXIT
	"$GO" test ./memstore -run '^$' -bench MemstoreBytesPerEntry -benchtime 1x -count 3 | tee "$OUT/data/entrysize.txt"
	(cd integration && IDEM_BENCH_ROUNDS=${ROUNDS:-3} IDEM_BENCH_ROWS=${BENCH_ROWS:-1000000,10000000} \
		IDEM_BENCH_GROWTH_C=${GROWTH_C:-1,4,16} "$GO" test -run '^$' -bench PostgresGrowth -timeout 180m) 2>&1 |
		tee "$OUT/data/growth.txt"
	df -h /var/lib/docker >"$OUT/data/disk.txt" 2>/dev/null || true
fi
cd "$ROOT"
"$GO" run scripts/benchplot.go -growth "$OUT/data/growth.txt" -entrysize "$OUT/data/entrysize.txt" \
	-loadavg "$OUT/data/loadavg.txt" -note "${NOTE:-}" -o "$OUT"
