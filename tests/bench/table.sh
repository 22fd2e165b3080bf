#!/bin/sh
# tests/bench/table.sh: every row of the performance table (issue 16) in one
# command, each with its floor and ratio (from the simulators' request logs)
# and peak RSS (the kernel's high-water mark of the usersync process, as
# /usr/bin/time reports it), then the table.
#
#   tests/bench/table.sh [build dir]          (default: build)
#
# Sizes (environment):
#   BENCH_USERS=10000 BENCH_GROUPS=500   the first sync and no-op re-sync
#   BENCH_LATENCY=20                     simulator latency, ms (0: CPU-bound)
#   BENCH_BIG=100000                     the first plan, re-plan and incremental rows
#   BENCH_SDK_USERS=2000                 the side by side with a script on the Okta Node SDK
#   BENCH_ROWS="sync plan resync incremental sdk"   which benchmarks to run
# A small run: BENCH_USERS=1000 BENCH_GROUPS=50 BENCH_BIG=5000 BENCH_SDK_USERS=300 tests/bench/table.sh
# (the sdk row installs @okta/okta-sdk-nodejs into build/bench-node with npm the first time)
#
# At BENCH_LATENCY=0 the sync row adds "CPU per write operation at 0 ms": the
# usersync CPU of the first sync's apply (after its first write reached a
# simulator) per write the simulators served.
#
# Each benchmark also prints what each simulator allows (its CPU per request
# against concurrency / latency), so a ratio bounded by a simulator shows as such.
# Figures taken on a shared, loaded machine vary from run to run: the request
# counts, floors and CPU seconds are the comparable ones.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$here/build}
us=$build/usersync
users=${BENCH_USERS:-10000}
groups=${BENCH_GROUPS:-500}
lat=${BENCH_LATENCY:-20}
big=${BENCH_BIG:-100000}
sdk_users=${BENCH_SDK_USERS:-2000}
rows=${BENCH_ROWS:-"sync plan resync incremental sdk"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export SOURCE_DIR="$here" USERSYNC="$us" PYTHON3="${PYTHON3:-python3}"

echo "usersync performance table: $users users / $groups groups at $lat ms, large rows at $big users"
echo "(figures taken on a shared machine that may be loaded: wall times vary; the request counts,"
echo " floors and CPU seconds are what compare)"
run() { # name, then the benchmark's arguments
  name=$1; shift
  echo "== $name: $*"
  "$us" run "$@" 2>&1 | tee "$out/$name.txt" | grep -v '^ROW|' || true
}
for r in $rows; do
  case $r in
    sync) run sync "$here/tests/bench/sync_10k.lua" "$users" "$groups" "$lat" sync ;;
    plan) run plan "$here/tests/bench/sync_10k.lua" "$big" 500 "$lat" plan ;;
    resync) run resync "$here/tests/bench/sync_10k.lua" "$big" 500 "$lat" resync ;;
    incremental) run incremental "$here/tests/bench/incremental_100k.lua" "$big" 10 ;;
    sdk) run sdk "$here/tests/bench/sdk_side_by_side.lua" "$sdk_users" 100 "$lat" ;;
    *) echo "unknown row $r" >&2; exit 2 ;;
  esac
done

echo
echo "| work | now | floor | ratio | goal |"
echo "|---|---|---|---|---|"
for r in $rows; do
  grep '^ROW|' "$out/$r.txt" | sed 's/^ROW|//; s/|/ | /g; s/^/| /; s/$/ |/' || true
done
