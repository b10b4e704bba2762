#!/usr/bin/env bash
# a2a-bench.sh: create_media_buy throughput of the reference seller (in
# memory) over A2A and over MCP, with one Go load client (cmd/adcp-load),
# and over MCP with the peer kit's load.mjs for comparison, in one run
# against one seller process. In ROUNDS rounds: at each concurrency, each
# round runs adcp-load over MCP, then over A2A, then load.mjs, so that a
# machine shared with other work slows all three alike; the table gives
# each figure's median over the rounds.
#
#   scripts/a2a-bench.sh [DURATION_S] [CONCURRENCY...]     # defaults: 5 s per phase, concurrency 2 and 16
#
# Environment:
#   PEER_DIR   the peer kit (default ../shared/peer)
#   ROUNDS     rounds (default 5); each round at each concurrency takes about
#              6 x (DURATION_S + 1 s): with the defaults, about 6 minutes in all
#   OUT        where results go (default bench-out/a2a)
#
# Prints every phase and then the medians, one line per (client, transport,
# concurrency, mode), which also go to $OUT/medians.tsv. The load clients run
# on the same host as the seller, so absolute figures include their cost;
# compare rows of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-5}
ROUNDS=${ROUNDS:-5}
shift || true
CONCURRENCY=("${@:-2 16}")
read -r -a CONCURRENCY <<<"${CONCURRENCY[*]}"

. scripts/lib.sh
bench_init a2a
trap lib_cleanup EXIT

seller_start "$OUT/seller.log" -dev -addr 127.0.0.1:0 -tokens "bench=$TOKEN" -insert-rate 0 -log-level warn
URL=$SELLER_BASE
log "seller at $URL (memory, -dev -insert-rate 0); ${DURATION}s per phase; concurrency ${CONCURRENCY[*]}; $ROUNDS rounds"

rm -f "$OUT"/round-*.json
for c in "${CONCURRENCY[@]}"; do
  for r in $(seq 1 "$ROUNDS"); do
    # The Go client: MCP then A2A (1 s warm-up before each phase).
    bin/adcp-load -url "$URL" -token "$TOKEN" -transport mcp,a2a -mode fresh,replay \
      -concurrency "$c" -duration "${DURATION}s" -json >"$OUT/round-go-c$c-r$r.json"
    # The peer kit's node client, over MCP (its own 1 s warm-up).
    node "$PEER_DIR/load.mjs" "$URL/mcp" --auth "$TOKEN" --duration "$DURATION" --concurrency "$c" \
      --mode both --json --out "$OUT/round-loadmjs-c$c-r$r.json" >/dev/null
    log "concurrency $c, round $r of $ROUNDS done"
  done
done

# Every phase, then the medians over the rounds.
node -e '
  const fs = require("fs"), dir = process.argv[1];
  const rows = [];
  for (const f of fs.readdirSync(dir).filter(f => f.startsWith("round-")).sort()) {
    const s = JSON.parse(fs.readFileSync(dir + "/" + f, "utf8"));
    const client = f.includes("loadmjs") ? "load.mjs" : "adcp-load";
    for (const r of s.results) rows.push({ client, transport: r.transport || "mcp", c: r.concurrency, mode: r.mode,
      rps: r.rps, p50: r.p50_ms, p99: r.p99_ms, n: r.requests, errors: r.errors, file: f });
  }
  const med = v => { v = v.slice().sort((a, b) => a - b); const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2; };
  const groups = new Map();
  for (const r of rows) {
    console.log(["phase", r.file, r.client, r.transport, r.c, r.mode, r.rps.toFixed(1), r.p50.toFixed(2), r.p99.toFixed(2), r.n, r.errors].join("\t"));
    const k = [r.client, r.transport, r.c, r.mode].join("\t");
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  const out = ["client\ttransport\tc\tmode\trounds\treq/s\tp50 ms\tp99 ms\terrors\treq/s min-max"];
  for (const [k, g] of [...groups].sort()) {
    const rps = g.map(r => r.rps);
    out.push([k, g.length, med(rps).toFixed(0), med(g.map(r => r.p50)).toFixed(2), med(g.map(r => r.p99)).toFixed(2),
      g.reduce((s, r) => s + r.errors, 0), Math.min(...rps).toFixed(0) + "-" + Math.max(...rps).toFixed(0)].join("\t"));
  }
  fs.writeFileSync(dir + "/medians.tsv", out.join("\n") + "\n");
  console.log(out.join("\n"));
' "$OUT"
log "medians in $OUT/medians.tsv"
