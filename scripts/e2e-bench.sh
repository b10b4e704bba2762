#!/usr/bin/env bash
# e2e-bench.sh: create_media_buy throughput, end to end over MCP, of the Go
# reference seller (memstore and Postgres) and of the TypeScript reference
# seller of the peer kit, on this machine, one at a time, each measured with
# two load clients: the peer kit's load.mjs (node.js) and cmd/adcp-load (Go).
#
#   scripts/e2e-bench.sh [DURATION_S] [CONCURRENCY...]     # defaults: 10 s, concurrency 2 and 16
#
# Environment:
#   PEER_DIR       the peer kit (default ../shared/peer)
#   DATABASE_URL   Postgres for the Postgres seller; without it a container of
#                  $IDEM_TEST_POSTGRES_IMAGE (default postgres:17-alpine) is
#                  started with docker (its defaults: fsync on, synchronous
#                  commit) and removed at the end
#   OUT            where results go (default bench-out/e2e)
#   CLIENTS        the load clients, space-separated (default "node go")
#
# Prints one line per (seller, client, concurrency, mode) and writes a
# Markdown table to $OUT/e2e.md. Each line also says how much CPU the seller
# (its whole process tree) and the load client used during that phase, in
# cores (CPU seconds over the phase's wall seconds, its 1 s warm-up and the
# client's start included) and in µs per request (cores / req/s): the load client runs on the same host, so this is how much of
# the machine each side took. Compare rows of one run; absolute figures
# vary by machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
shift || true
CONCURRENCY=("${@:-2 16}")
read -r -a CONCURRENCY <<<"${CONCURRENCY[*]}"
CLIENTS=${CLIENTS:-node go}

. scripts/lib.sh
bench_init e2e
cleanup() {
  lib_cleanup
  "$PEER_DIR/ts-agent" stop 3917 >/dev/null 2>&1 || true
}
trap cleanup EXIT

# cpu_ticks PID: CPU clock ticks (user + system, reaped children included)
# used so far by PID and every process below it.
cpu_ticks() {
  local root=$1
  ps -e -o pid=,ppid= | awk -v root="$root" '
    { parent[$1] = $2 }
    END {
      for (p in parent) { q = p; while (q != "" && q != root && q in parent && q != 1) q = parent[q]; if (q == root) print p }
    }' | while read -r p; do
    # fields after the ")" that ends the command name: 14-17 are utime stime cutime cstime
    sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }'
  done | awk '{ s += $1 } END { print s + 0 }'
}
HZ=$(getconf CLK_TCK)

# phase NAME SERVER_PID CLIENT C MODE URL: one measured phase; appends a row.
phase() {
  local name=$1 spid=$2 client=$3 c=$4 mode=$5 url=$6 json t0 t1 s0 s1 ccpu
  json="$OUT/$name-$client-c$c-$mode.json"
  s0=$(cpu_ticks "$spid") t0=$(date +%s.%N)
  case $client in
  node) /usr/bin/time -f '%U %S' -o "$OUT/time.txt" node "$PEER_DIR/load.mjs" "$url" --auth "$TOKEN" \
          --duration "$DURATION" --concurrency "$c" --mode "$mode" --json --out "$json" >/dev/null ;;
  go) /usr/bin/time -f '%U %S' -o "$OUT/time.txt" bin/adcp-load -url "${url%/mcp}" -token "$TOKEN" -transport mcp \
          -duration "${DURATION}s" -concurrency "$c" -mode "$mode" -json >"$json" ;;
  esac
  t1=$(date +%s.%N) s1=$(cpu_ticks "$spid")
  ccpu=$(awk '{ print $1 + $2 }' "$OUT/time.txt")
  node -e '
    const [file, name, client, wall, scpu, ccpu] = process.argv.slice(1);
    let errors = 0;
    for (const r of require(file).results) {
      const n = r.requests, w = Number(wall);
      errors += r.errors;
      console.log([name, client, r.concurrency, r.mode, Number(r.rps).toFixed(1), r.p50_ms, r.p99_ms, n, r.errors,
        (scpu / w).toFixed(2), (ccpu / w).toFixed(2),
        Math.round(scpu / w / r.rps * 1e6), Math.round(ccpu / w / r.rps * 1e6)].join("\t"));
    }
    if (errors > 0) { console.error(`e2e-bench: ${name}, ${client} client: ${errors} errors (${file})`); process.exit(1); }
  ' "$json" "$name" "$client" "$(echo "$t1 - $t0" | bc)" "$(echo "scale=3; ($s1 - $s0) / $HZ" | bc)" "$ccpu" | tee -a "$OUT/rows.tsv"
}

# load NAME URL SERVER_PID: every client, concurrency and mode.
load() {
  local name=$1 url=$2 spid=$3
  for c in "${CONCURRENCY[@]}"; do
    for client in $CLIENTS; do
      log "$name, $client client, concurrency $c, ${DURATION}s per mode"
      for mode in fresh replay; do phase "$name" "$spid" "$client" "$c" "$mode" "$url"; done
    done
  done
}

: >"$OUT/rows.tsv"

# -dev: the sealing, webhook signing and account keys are made up for the run.
seller=(-dev -addr 127.0.0.1:0 -tokens "bench=$TOKEN" -insert-rate 0)
seller_start "$OUT/go-memory.log" "${seller[@]}"
load go-memory "$SELLER_URL" "$SELLER_PID"
seller_stop

postgres_start bench
seller_start "$OUT/go-postgres.log" "${seller[@]}" -database-url "$DATABASE_URL"
load go-postgres "$SELLER_URL" "$SELLER_PID"
seller_stop

for env in development production; do
  NODE_ENV=$env ADCP_AUTH_TOKEN=$TOKEN "$PEER_DIR/ts-agent" start 3917 >&2
  load "ts-reference-$env" http://127.0.0.1:3917/mcp "$(cat "${PEER_HOME:-$HOME/.cache/adcp-peer}/run/ts-agent-3917.pid")"
  "$PEER_DIR/ts-agent" stop 3917 >&2
done

{
  echo "| seller | client | concurrency | mode | req/s | p50 ms | p99 ms | requests | errors | seller cores | client cores | seller µs/req | client µs/req |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$OUT/rows.tsv"
} | tee "$OUT/e2e.md"
