#!/usr/bin/env bash
# e2e-bench.sh: create_media_buy throughput, end to end over MCP, of the Go
# reference seller (memstore and Postgres) and of the TypeScript reference
# seller of the peer kit, on this machine, one at a time, with the same
# load.mjs flags.
#
#   scripts/e2e-bench.sh [DURATION_S] [CONCURRENCY...]     # defaults: 10 s, concurrency 2 and 16
#
# Environment:
#   PEER_DIR       the peer kit (default ../shared/peer)
#   DATABASE_URL   Postgres for the Postgres seller; without it a container of
#                  $IDEM_TEST_POSTGRES_IMAGE (default postgres:17-alpine) is
#                  started with docker and removed at the end
#   OUT            where results go (default bench-out/e2e)
#
# Prints one line per (seller, concurrency, mode) and writes a Markdown table
# to $OUT/e2e.md. The load client runs on the same host, so absolute figures
# include its cost and vary by machine; compare rows of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${1:-10}
shift || true
CONCURRENCY=("${@:-2 16}")
read -r -a CONCURRENCY <<<"${CONCURRENCY[*]}"
PEER_DIR=${PEER_DIR:-$ROOT/../shared/peer}
OUT=${OUT:-$ROOT/bench-out/e2e}
TOKEN=sk_bench_0123456789abcdef
mkdir -p "$OUT" bin
OUT=$(cd "$OUT" && pwd) # node resolves the result files from its own folder
log() { echo "e2e-bench: $*" >&2; }

"$PEER_DIR/setup"
go build -o bin/adcp-seller ./cmd/adcp-seller

. scripts/lib.sh
cleanup() {
  lib_cleanup
  "$PEER_DIR/ts-agent" stop 3917 >/dev/null 2>&1 || true
}
trap cleanup EXIT

# load NAME URL: runs load.mjs (fresh and replay) at each concurrency.
load() {
  local name=$1 url=$2
  for c in "${CONCURRENCY[@]}"; do
    log "$name, concurrency $c, ${DURATION}s per mode"
    node "$PEER_DIR/load.mjs" "$url" --auth "$TOKEN" --duration "$DURATION" --concurrency "$c" \
      --mode both --json --out "$OUT/$name-c$c.json" >/dev/null
    node -e '
      const s = require(process.argv[1]);
      for (const r of s.results) console.log([process.argv[2], r.concurrency, r.mode, r.rps, r.p50_ms, r.p99_ms, r.requests, r.errors].join("\t"));
    ' "$OUT/$name-c$c.json" "$name" | tee -a "$OUT/rows.tsv"
  done
}

: >"$OUT/rows.tsv"

# -dev: the sealing, webhook signing and account keys are made up for the run.
seller=(-dev -addr 127.0.0.1:0 -tokens "bench=$TOKEN" -insert-rate 0)
seller_start "$OUT/go-memory.log" "${seller[@]}"
load go-memory "$SELLER_URL"
seller_stop

postgres_start bench
seller_start "$OUT/go-postgres.log" "${seller[@]}" -database-url "$DATABASE_URL"
load go-postgres "$SELLER_URL"
seller_stop

for env in development production; do
  NODE_ENV=$env ADCP_AUTH_TOKEN=$TOKEN "$PEER_DIR/ts-agent" start 3917 >&2
  load "ts-reference-$env" http://127.0.0.1:3917/mcp
  "$PEER_DIR/ts-agent" stop 3917 >&2
done

{
  echo "| seller | concurrency | mode | req/s | p50 ms | p99 ms | requests | errors |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$OUT/rows.tsv"
} | tee "$OUT/e2e.md"
