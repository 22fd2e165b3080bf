#!/bin/sh
# serve_load.sh: load check of the `usersync serve` HTTP server with wrk.
#   sh tests/bench/serve_load.sh [seconds=30] [connections=32] [threads=2] [consumer=drain|decode]
# Env: USERSYNC (binary; default build/usersync), DATA_DIR (default tests/data).
# consumer=decode makes the stand-in decode every event in Lua; when that is
# slower than the load the queue fills and the surplus is answered 503 (the
# designed back-pressure, counted as non-2xx here).
# Starts tests/bench/serve_hook.lua (usersync.server + a consumer loop; stands in
# for `usersync serve`, which needs a full config), then runs wrk against
#   1. GET /healthz
#   2. POST /hooks/okta with valid deliveries (the Okta fixture, a new uuid each)
# and prints requests/s, latency p50/p90/p99, non-2xx and socket errors (goal:
# zero) and the server's RSS before and after. Exit 1 when any request failed.
set -eu
cd "$(dirname "$0")/../.."
SECS=${1:-30}
CONNS=${2:-32}
THREADS=${3:-2}
CONSUMER=${4:-drain}
USERSYNC=${USERSYNC:-build/usersync}
DATA_DIR=${DATA_DIR:-tests/data}
PY=${PYTHON3:-/usr/bin/python3}
SECRET="bench-secret-$$"
TMP=$(mktemp -d)
SRV_PID=
# shellcheck disable=SC2317  # (called by the trap below)
cleanup() {
  if [ -n "$SRV_PID" ]; then kill "$SRV_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

command -v wrk >/dev/null || { echo "wrk is not installed"; exit 2; }

# The fixture delivery with a placeholder where the event uuid goes.
"$PY" - "$DATA_DIR/fixtures/okta/docs_event_hook_delivery_user_session_start.json" >"$TMP/body.json" <<'PYEOF'
import json, sys
body = json.load(open(sys.argv[1]))["body"]
body["data"]["events"][0]["uuid"] = "@UUID@"
sys.stdout.write(json.dumps(body, separators=(",", ":")))
PYEOF

"$USERSYNC" run tests/bench/serve_hook.lua 127.0.0.1:0 "$SECRET" "$CONSUMER" >"$TMP/server.out" 2>&1 &
SRV_PID=$!
i=0
while ! grep -q '^listening on' "$TMP/server.out" 2>/dev/null; do
  i=$((i + 1))
  [ $i -gt 100 ] && { echo "server did not start:"; cat "$TMP/server.out"; exit 2; }
  sleep 0.1
done
PORT=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$TMP/server.out")
BASE="http://127.0.0.1:$PORT"

rss() { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$SRV_PID/status"; }
status=0
# Prints the figures of one wrk run (its output in $1) and fails on errors.
report() {
  rps=$(awk '/^Requests\/sec/ {print $2}' "$1")
  p50=$(awk '$1 == "50%" {print $2}' "$1")
  p90=$(awk '$1 == "90%" {print $2}' "$1")
  p99=$(awk '$1 == "99%" {print $2}' "$1")
  total=$(awk '/requests in/ {print $1}' "$1")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$1")
  sock=$(awk '/Socket errors/ {sub(/.*Socket errors: /, ""); print}' "$1")
  echo "  requests: $total   requests/s: $rps"
  echo "  latency p50 $p50  p90 $p90  p99 $p99"
  echo "  non-2xx: ${non2xx:-0}   socket errors: ${sock:-none}"
  if [ -n "$non2xx" ] || [ -n "$sock" ]; then status=1; fi
}

echo "server pid $SRV_PID on port $PORT ($CONSUMER consumer); wrk -t$THREADS -c$CONNS -d${SECS}s"
echo "RSS at start: $(rss)"

echo "GET /healthz"
wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "$BASE/healthz" >"$TMP/health.txt"
report "$TMP/health.txt"
echo "RSS after /healthz: $(rss)"

echo "POST /hooks/okta (valid deliveries, one new event each, $(wc -c <"$TMP/body.json") bytes)"
BODY_TEMPLATE="$TMP/body.json" HOOK_SECRET="$SECRET" \
  wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -s tests/bench/serve_load_post.lua \
  "$BASE/hooks/okta" >"$TMP/hook.txt"
report "$TMP/hook.txt"
sleep 1
echo "RSS after the hook load: $(rss)"
echo "GET /metrics (hook counters):"
curl -s "$BASE/metrics" | grep -E '^usersync_hook_(deliveries|events)_total' | sed 's/^/  /'

kill -TERM "$SRV_PID"
wait "$SRV_PID" || status=1
SRV_PID=
sed 's/^/  /' "$TMP/server.out" | grep -v '^  listening on'
exit $status
