#!/bin/sh
# The demo (README quick start, first command): installs what is missing,
# builds usersync, starts the Okta simulator with a generated organisation,
# runs the example script scripts/examples/okta-inventory.lua against it
# with `usersync run`, prints the report, and stops the simulator.
set -eu
cd "$(dirname "$0")/.."
sh tests/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
exec sh tests/demo-run.sh ./build/usersync
