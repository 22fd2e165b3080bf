#!/bin/sh
# The README's demo on the built binary (tests/demo-run.sh): check, plan,
# sync, a second sync that writes nothing, history, and no simulator left.
set -u
cd "$SOURCE_DIR" || exit 1
out=$(sh tests/demo-run.sh "$USERSYNC" 2>&1); rc=$?
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAILED: $1"; fi; }
check "demo exits 0" '[ $rc -eq 0 ]'
check "check: every server ok" '[ "$(echo "$out" | grep -Ec "^(source|target) .*: ok$")" -eq 4 ]'
check "plan: 70 users in scope" 'echo "$out" | grep -q "sync \"demo\": source okta, 70 users in scope"'
check "plan: the same changes for the three targets" '[ "$(echo "$out" | grep -Ec "^  (jira|confluence|bitbucket) \((jira|confluence|bitbucket)\): 25 create group, 65 create user, 249 add member$")" -ge 3 ]'
check "sync applies every change" 'echo "$out" | grep -q "^applied 1017 changes, 0 failed; run 1 "'
check "second sync changes nothing" 'echo "$out" | grep -q "^applied 0 changes, 0 failed; run 2 "'
check "history lists both runs" 'echo "$out" | grep -Eq "^1 +[^ ]+ +demo +manual +full +[0-9.]+ +ok +create_group 75, create_user 195, add_member 747$"'
check "targets hold the accounts" 'echo "$out" | grep -Eq "jira +66 accounts"'
check "the tokens never appear" '! echo "$out" | grep -q "test-token"'
[ $failed -eq 0 ] || echo "$out"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
