#!/bin/sh
# The demo (README quick start, first command): installs what is missing,
# builds usersync, and runs tests/demo-run.sh: simulators of Okta (with a
# generated organisation), Jira, Confluence and Bitbucket, a config,
# `usersync check`, `plan`, `sync`, a second `sync` that changes nothing,
# `history`; the simulators are stopped at the end.
set -eu
cd "$(dirname "$0")/.."
sh tests/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
exec sh tests/demo-run.sh ./build/usersync
