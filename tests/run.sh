#!/bin/sh
# The whole test suite (README quick start, second command):
#   1. build (RelWithDebInfo) and run every test through ctest;
#   2. rebuild with ASan+UBSan and run the C and Lua tests again;
#   3. run the C and Lua tests under valgrind.
# Installs missing packages first. Build trees: build/, build-asan/, build-valgrind/.
set -eu
cd "$(dirname "$0")/.."
sh tests/install-deps.sh
JOBS=$(nproc 2>/dev/null || echo 2)
status=0

step() { printf '\n=== %s ===\n' "$*"; }

step "build + all tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"
ctest --test-dir build -j"$JOBS" --output-on-failure || status=1
# The contract test's summary: violations of the vendor specs per product, and
# how each is accounted for (ctest keeps a passing test's output in its log).
grep -h '^contract: okta' build/Testing/Temporary/LastTest.log 2>/dev/null | tail -n 1

step "ASan+UBSan build: unit and Lua tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DUSERSYNC_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -j"$JOBS" -L 'unit|lua' --output-on-failure || status=1

step "valgrind: unit and Lua tests"
cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Debug -DUSERSYNC_VALGRIND=ON >/dev/null
cmake --build build-valgrind -j"$JOBS"
ctest --test-dir build-valgrind -j"$JOBS" -L 'unit|lua' --output-on-failure || status=1

exit $status
