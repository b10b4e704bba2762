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

pids=() container=''
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$PEER_DIR/ts-agent" stop 3917 >/dev/null 2>&1 || true
  [ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# start_seller LOGFILE ARGS...: starts bin/adcp-seller on a free port, sets URL.
start_seller() {
  local logf=$1; shift
  bin/adcp-seller -addr 127.0.0.1:0 -tokens "bench=$TOKEN" -insert-rate 0 "$@" >"$logf" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    URL=$(sed -n 's/.*serving MCP at \(http[^ ]*\).*/\1/p' "$logf")
    [ -n "$URL" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$logf" >&2; return 1; }
    sleep 0.1
  done
  log "seller did not start"; cat "$logf" >&2; return 1
}

stop_last() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

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

start_seller "$OUT/go-memory.log"
load go-memory "$URL"
stop_last

if [ -z "${DATABASE_URL:-}" ]; then
  image=${IDEM_TEST_POSTGRES_IMAGE:-postgres:17-alpine}
  container=$(docker run -d -e POSTGRES_PASSWORD=bench -e POSTGRES_USER=bench -e POSTGRES_DB=bench -p 127.0.0.1::5432 "$image")
  port=$(docker port "$container" 5432/tcp | head -1 | sed 's/.*://')
  DATABASE_URL="postgres://bench:bench@127.0.0.1:$port/bench?sslmode=disable"
  for _ in $(seq 1 120); do
    [ "$(docker logs "$container" 2>&1 | grep -c 'ready to accept connections')" -ge 2 ] && break
    sleep 0.5
  done
  log "Postgres $image in container ${container:0:12}"
fi
start_seller "$OUT/go-postgres.log" -database-url "$DATABASE_URL"
load go-postgres "$URL"
stop_last

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
