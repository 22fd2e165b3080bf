#!/bin/sh
# The example script scripts/examples/okta-inventory.lua against the Okta
# simulator: tests/e2e/inventory-example.sh PATH/TO/usersync. Starts the
# simulator with a generated organisation, runs the script, prints the
# report and the requests it cost, and stops the simulator (also on error).
set -eu
cd "$(dirname "$0")/../.."
USERSYNC=${1:?usage: tests/e2e/inventory-example.sh PATH/TO/usersync}
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

WORK=$(mktemp -d)
SIM_PID=""
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== generating an Okta organisation (300 users, 30 groups)"
"$PY" tests/fakes/genorg.py --users 300 --groups 30 --seed 7 --app-id 0oaDemoApp > "$WORK/org.json"

echo "== starting the Okta simulator"
mkfifo "$WORK/sim.out"
"$PY" tests/fakes/fake.py okta --port 0 --state "$WORK/org.json" > "$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
read -r line < "$WORK/sim.out" || true
URL=${line#listening on }
case "$URL" in http://*) ;; *) echo "the simulator did not start: $line" >&2; cat "$WORK/sim.err" >&2; exit 1;; esac
echo "   $URL (state $WORK/org.json)"

echo "== usersync run scripts/examples/okta-inventory.lua"
OKTA_URL="$URL" OKTA_TOKEN=test-token "$USERSYNC" run scripts/examples/okta-inventory.lua "$WORK/inventory.db"

echo "== requests the script made (from the simulator's request log)"
"$PY" - "$URL" <<'PYEOF'
import json, sys, urllib.request, collections
reqs = json.load(urllib.request.urlopen(sys.argv[1] + "/__fake/requests"))
kinds = collections.Counter(("/api/v1/groups/{id}/users" if "/users" in r["path"] and r["path"].startswith("/api/v1/groups/") else r["path"]) + " " + str(r["status"]) for r in reqs)
for k, n in sorted(kinds.items()):
    print(f"   {n:5d}  GET {k}")
PYEOF
"$USERSYNC" --version | head -1
echo "== done (simulator stopped)"
