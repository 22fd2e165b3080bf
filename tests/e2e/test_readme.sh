#!/bin/sh
# Every command README.md shows is run for real against the simulators, or
# listed as covered elsewhere (tests/e2e/readme_commands.py has the tables).
# First the checker itself: a README with a new command, a new flag on a
# known command, an unknown flag and an unknown CMake option must fail,
# naming each. Then the real README: every command runs with the exit
# status and output expected, no token is printed, no simulator is left.
set -u
cd "$SOURCE_DIR" || exit 1
PY=${PYTHON3:-/usr/bin/python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAILED: $1"; fi; }

cp README.md "$TMP/README.md"
cat >>"$TMP/README.md" <<'MD'

```sh
usersync serve --listen 127.0.0.1:8080   # a new command
```

Run `usersync sync --quiet` from cron, or pass `--frobnicate`, which is new,
and so is `-DUSERSYNC_NOPE=ON`.
MD
"$PY" tests/e2e/readme_commands.py --no-run --readme "$TMP/README.md" >"$TMP/self.out" 2>&1; rc=$?
check "a README with unlisted commands fails the check" '[ $rc -eq 1 ]'
check "... naming the new command of a shell block" 'grep -q "README.md:[0-9]*: .usersync serve --listen 127.0.0.1:8080. is neither run" "$TMP/self.out"'
check "... naming a new flag on a known command" 'grep -q "README.md:[0-9]*: .usersync sync --quiet. is neither run" "$TMP/self.out"'
check "... naming an unknown inline flag" 'grep -q "README.md:[0-9]*: .--frobnicate. is a flag no usersync help mentions" "$TMP/self.out"'
check "... naming an unknown CMake option" 'grep -q "README.md:[0-9]*: .-DUSERSYNC_NOPE=ON. is not an option()" "$TMP/self.out"'
check "... and nothing the README itself shows" '[ "$(grep -c "^FAILED" "$TMP/self.out")" -eq 4 ] || { cat "$TMP/self.out"; false; }'

sed '/^```sh$/,/^```$/{/sh tests\/run.sh/d}' README.md >"$TMP/README-less.md"
"$PY" tests/e2e/readme_commands.py --no-run --readme "$TMP/README-less.md" >"$TMP/stale.out" 2>&1; rc=$?
check "a table entry the README no longer shows fails the check" '[ $rc -eq 1 ] && grep -q "^FAILED: .sh tests/run.sh. is in the tables but the README no longer shows it" "$TMP/stale.out"'

"$PY" tests/e2e/readme_commands.py >"$TMP/run.out" 2>&1; rc=$?
check "every README command runs as shown" '[ $rc -eq 0 ]'
check "the commands were run" '[ "$(grep -c "^ok: " "$TMP/run.out")" -ge 30 ]'
dir=$(sed -n "s/^work directory: //p" "$TMP/run.out")
pids=$(sed -n "s/^simulator pids: //p" "$TMP/run.out")
check "four simulators were started" '[ "$(echo $pids | wc -w)" -eq 4 ]'
alive=""
for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
check "no simulator is left running" '[ -z "$alive" ]'
check "the work directory is removed" '[ -n "$dir" ] && [ ! -e "$dir" ]'
[ $failed -eq 0 ] || cat "$TMP/run.out"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
