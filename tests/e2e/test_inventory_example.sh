#!/bin/sh
# The example inventory script on the built binary: it must finish, report
# the generated organisation, cost exactly the requests the paging implies,
# and leave no simulator running.
set -u
cd "$SOURCE_DIR" || exit 1
out=$(sh tests/e2e/inventory-example.sh "$USERSYNC" 2>&1); rc=$?
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAILED: $1"; fi; }
check "demo exits 0" '[ $rc -eq 0 ]'
check "300 users read in 2 pages" 'echo "$out" | grep -q "users: 300 (2 pages), groups: 30 (31 member requests)"'
check "every status of the org is counted" 'echo "$out" | grep -Eq "DEPROVISIONED +[0-9]+"'
check "request log: 2 user pages" 'echo "$out" | grep -Eq "^ +2  GET /api/v1/users 200$"'
check "request log: 31 member pages" 'echo "$out" | grep -Eq "^ +31  GET /api/v1/groups/\{id\}/users 200$"'
check "the token never appears" '! echo "$out" | grep -q "test-token"'
# this run's simulator, by its state file (other tests run simulators at the same time)
state=$(echo "$out" | sed -n 's/^ *http:.*(state \(.*\))$/\1/p')
check "the simulator is stopped" '[ -n "$state" ] && ! pgrep -f "fake.py okta --port 0 --state $state" >/dev/null'
[ $failed -eq 0 ] || echo "$out"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
