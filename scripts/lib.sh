# scripts/lib.sh: what the benchmark scripts share (e2e-bench.sh,
# a2a-bench.sh, dashboard-under-load.sh). Sourced, from the repository root:
#
#   . scripts/lib.sh
#   trap lib_cleanup EXIT        # or call lib_cleanup from the script's own trap
#
# bench_init sets up a load benchmark; seller_start / seller_stop run
# bin/adcp-seller (bench_init, or the caller, builds it);
# postgres_start gives a Postgres when DATABASE_URL is unset. lib_cleanup
# stops whatever of these is still running.

# bench_init NAME: what e2e-bench.sh and a2a-bench.sh set up alike, from
# the repository root: PEER_DIR (default ../shared/peer), OUT (default
# bench-out/NAME, made absolute: node resolves result files from its own
# folder), the bench principal's TOKEN, log (lines prefixed "NAME-bench:"),
# the peer kit installed (its output on stderr), and bin/adcp-seller and
# bin/adcp-load built from the tree.
bench_init() {
  BENCH_NAME=$1
  # log MESSAGE...: a line on stderr, prefixed with the benchmark's name.
  log() { echo "$BENCH_NAME-bench: $*" >&2; }
  PEER_DIR=${PEER_DIR:-$PWD/../shared/peer}
  OUT=${OUT:-$PWD/bench-out/$BENCH_NAME}
  TOKEN=sk_bench_0123456789abcdef
  mkdir -p "$OUT" bin
  OUT=$(cd "$OUT" && pwd)
  "$PEER_DIR/setup" >&2
  go build -o bin/adcp-seller ./cmd/adcp-seller
  go build -o bin/adcp-load ./cmd/adcp-load
}

lib_pids=()      # sellers started and not yet stopped
lib_container='' # the Postgres container postgres_start started

# seller_start LOG ARGS...: starts bin/adcp-seller ARGS... in the background,
# its stdout and stderr to LOG, and waits until it serves: until it prints
# its MCP URL and, when ARGS hold -metrics-addr (written as a separate
# argument), its metrics URL. Then SELLER_PID is its process, SELLER_URL the
# MCP endpoint (http://host:port/mcp), SELLER_BASE that URL without /mcp
# (where /a2a is too) and SELLER_METRICS the metrics URL (or empty). Fails,
# with LOG on stderr, if the seller exits or is not ready within 20 s.
seller_start() {
  local logf=$1 metrics=''
  shift
  case " $* " in *" -metrics-addr "*) metrics=1 ;; esac
  bin/adcp-seller "$@" >"$logf" 2>&1 &
  SELLER_PID=$!
  lib_pids+=("$SELLER_PID")
  SELLER_URL='' SELLER_BASE='' SELLER_METRICS=''
  for _ in $(seq 1 200); do
    SELLER_URL=$(sed -n 's/.*serving MCP at \(http[^ ]*\).*/\1/p' "$logf")
    [ -z "$metrics" ] || SELLER_METRICS=$(sed -n 's/.*serving metrics at \(http[^ ]*\).*/\1/p' "$logf")
    if [ -n "$SELLER_URL" ] && { [ -z "$metrics" ] || [ -n "$SELLER_METRICS" ]; }; then
      SELLER_BASE=${SELLER_URL%/mcp}
      return 0
    fi
    if ! kill -0 "$SELLER_PID" 2>/dev/null; then
      echo "seller_start: bin/adcp-seller exited:" >&2
      cat "$logf" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "seller_start: bin/adcp-seller was not ready within 20 s:" >&2
  cat "$logf" >&2
  return 1
}

# seller_stop: stops the seller seller_start started last, and waits for it.
seller_stop() {
  local p kept=()
  kill "$SELLER_PID" 2>/dev/null || true
  wait "$SELLER_PID" 2>/dev/null || true
  for p in "${lib_pids[@]}"; do
    [ "$p" = "$SELLER_PID" ] || kept+=("$p")
  done
  lib_pids=("${kept[@]}")
  SELLER_PID=''
}

# postgres_start NAME: unless DATABASE_URL is set, starts a container of
# $IDEM_TEST_POSTGRES_IMAGE (default postgres:17-alpine) whose user,
# password and database are NAME, on a free port of 127.0.0.1, waits until
# it accepts connections and sets DATABASE_URL. PG_DESC says which
# Postgres it is, for the scripts' notes. lib_cleanup removes the container.
postgres_start() {
  local name=$1 image port
  if [ -n "${DATABASE_URL:-}" ]; then
    PG_DESC="Postgres at \$DATABASE_URL"
    return 0
  fi
  image=${IDEM_TEST_POSTGRES_IMAGE:-postgres:17-alpine}
  lib_container=$(docker run -d -e POSTGRES_PASSWORD="$name" -e POSTGRES_USER="$name" -e POSTGRES_DB="$name" -p 127.0.0.1::5432 "$image")
  port=$(docker port "$lib_container" 5432/tcp | head -1 | sed 's/.*://')
  DATABASE_URL="postgres://$name:$name@127.0.0.1:$port/$name?sslmode=disable"
  # The image logs it twice: after the init scripts' server, then the real one.
  for _ in $(seq 1 120); do
    [ "$(docker logs "$lib_container" 2>&1 | grep -c 'ready to accept connections')" -ge 2 ] && break
    sleep 0.5
  done
  PG_DESC="Postgres ($image) in Docker"
  echo "postgres_start: $PG_DESC, container ${lib_container:0:12}" >&2
}

# lib_cleanup stops the sellers still running and removes the Postgres
# container; for the scripts' EXIT traps.
lib_cleanup() {
  local p
  for p in "${lib_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "$lib_container" ] || docker rm -f "$lib_container" >/dev/null 2>&1 || true
}
