#!/usr/bin/env bash
# dashboard-under-load.sh: a picture of docs/grafana/idempotency-dashboard.json
# under load, from real data. Starts the reference seller on Postgres with
# /metrics on its own port, scrapes it every second, drives create_media_buy
# with the peer kit's load.mjs (fresh keys, then replays by another
# principal), and renders the
# dashboard's panels from the scrapes with scripts/dashboard-svg.go.
#
#   scripts/dashboard-under-load.sh [DURATION_S]     # per load.mjs mode; default 9 (about 20 s of load)
#
# Environment:
#   PEER_DIR       the peer kit (default ../shared/peer)
#   DATABASE_URL   Postgres; without it a container of $IDEM_TEST_POSTGRES_IMAGE
#                  (default postgres:17-alpine) is started and removed at the end
#   CONCURRENCY    load.mjs clients (default 4)
#   INSERT_RATE    the seller's -insert-rate (default 150 new keys/s, bursts of
#                  750: the fresh-key phase runs into it, so rate_limited shows)
#   OUT            the SVG (default docs/grafana/idempotency-dashboard-under-load.svg)
#   SCRAPES        keep the scrapes here (default: a temporary file)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${1:-9}
PEER_DIR=${PEER_DIR:-$ROOT/../shared/peer}
CONCURRENCY=${CONCURRENCY:-4}
INSERT_RATE=${INSERT_RATE:-150}
OUT=${OUT:-docs/grafana/idempotency-dashboard-under-load.svg}
TOKEN=sk_dashboard_0123456789abcdef   # fresh keys, rate-limited
TOKEN2=sk_dashboard_replay_0123456789 # replays, another principal: its budget is untouched
work=$(mktemp -d)
SCRAPES=${SCRAPES:-$work/scrapes.prom}
log() { echo "dashboard-under-load: $*" >&2; }

. scripts/lib.sh
scraper=''
cleanup() {
  [ -z "$scraper" ] || kill "$scraper" 2>/dev/null || true
  lib_cleanup
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p bin
go build -o bin/adcp-seller ./cmd/adcp-seller

postgres_start dash
# -dev: the sealing, webhook signing and account keys are made up for the run.
seller_start "$work/seller.log" -dev -addr 127.0.0.1:0 -metrics-addr 127.0.0.1:0 -tokens "dash=$TOKEN,dash-replay=$TOKEN2" \
  -insert-rate "$INSERT_RATE" -database-url "$DATABASE_URL"
URL=$SELLER_URL METRICS=$SELLER_METRICS
log "seller at $URL, metrics at $METRICS"

go build -o "$work/dashboard-svg" scripts/dashboard-svg.go
"$work/dashboard-svg" scrape -url "$METRICS" -every 1s -out "$SCRAPES" &
scraper=$!
sleep 3
for mode in fresh replay; do
  tok=$TOKEN
  [ "$mode" = fresh ] || tok=$TOKEN2
  node "$PEER_DIR/load.mjs" "$URL" --auth "$tok" --duration "$DURATION" --concurrency "$CONCURRENCY" --mode "$mode" \
    --json --out "$work/load-$mode.json" >/dev/null
done
summary=$(node -e '
  const r = [process.argv[1], process.argv[2]].map(f => require(f).results[0]);
  console.log(r.map(r => `${r.mode}: ${r.requests} requests, ${Math.round(r.rps)} req/s, ${r.errors} not answered as load.mjs expects`).join("; "));
' "$work/load-fresh.json" "$work/load-replay.json")
log "load: $summary"
sleep 6
kill "$scraper"
wait "$scraper" || true
scraper=''

"$work/dashboard-svg" render -in "$SCRAPES" -o "$OUT" \
  -note "Seller: bin/adcp-seller on $PG_DESC, -insert-rate $INSERT_RATE, on a 2-core machine shared with other work (absolute figures are this machine's). Load: peer load.mjs --duration $DURATION --concurrency $CONCURRENCY, --mode fresh (new keys) then --mode replay (one key per client, another principal) ($summary; the fresh ones past the insert rate are RATE_LIMITED). No data: no server error, no duplicate waited (load.mjs sends none concurrently), nothing expired to sweep."
log "wrote $OUT"
