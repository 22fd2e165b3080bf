#!/bin/sh
# The demo itself, for a built binary: tests/demo-run.sh PATH/TO/usersync.
# Starts simulators of Okta (with a generated organisation), Jira,
# Confluence and Bitbucket, writes a config, runs `usersync plan`, then
# `usersync sync`, then `usersync history`, then a second sync that changes
# nothing, and stops the simulators (also on error or Ctrl-C).
set -eu
cd "$(dirname "$0")/.."
USERSYNC=${1:?usage: tests/demo-run.sh PATH/TO/usersync}
case "$USERSYNC" in /*) ;; *) USERSYNC="$(pwd)/$USERSYNC" ;; esac
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

WORK=$(mktemp -d)
PIDS=""
cleanup() {
  for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# start PRODUCT [STATE_FILE]: starts a simulator, sets URL to its address.
start() {
  mkfifo "$WORK/$1.out"
  if [ -n "${2:-}" ]; then
    "$PY" tests/fakes/fake.py "$1" --port 0 --state "$2" > "$WORK/$1.out" 2>"$WORK/$1.err" &
  else
    "$PY" tests/fakes/fake.py "$1" --port 0 > "$WORK/$1.out" 2>"$WORK/$1.err" &
  fi
  PIDS="$PIDS $!"
  read -r line < "$WORK/$1.out" || true
  URL=${line#listening on }
  case "$URL" in http://*) ;; *) echo "the $1 simulator did not start: $line" >&2; cat "$WORK/$1.err" >&2; exit 1;; esac
  printf '   %-11s %s\n' "$1" "$URL"
}

echo "== generating an Okta organisation (300 users, 30 groups, app 0oaDemoApp)"
"$PY" tests/fakes/genorg.py --users 300 --groups 30 --seed 7 --app-id 0oaDemoApp > "$WORK/org.json"
echo '{"users": [{"username": "admin", "userKey": "admin", "displayName": "Administrator", "email": "admin@example.com", "disabled": false}], "groups": ["confluence-administrators", "confluence-users"], "members": {"confluence-administrators": ["admin"], "confluence-users": ["admin"]}, "license": {"seats": 1000}}' > "$WORK/confluence.json"

echo "== starting the simulators"
start okta "$WORK/org.json"; OKTA=$URL
start jira; JIRA=$URL
start confluence "$WORK/confluence.json"; CONF=$URL
start bitbucket; BB=$URL

cat > "$WORK/usersync.conf.lua" <<CONF
-- The demo's config: every user the Okta app assigns gets an account in
-- Jira, Confluence and Bitbucket, in groups named like their Okta groups.
return {
  state = "$WORK/usersync.db",
  sources = { okta = { type = "okta", url = "$OKTA", token = env "OKTA_API_TOKEN", app_id = "0oaDemoApp" } },
  targets = {
    jira       = { type = "jira",       url = "$JIRA", token = env "ATLASSIAN_TOKEN" },
    confluence = { type = "confluence", url = "$CONF", token = env "ATLASSIAN_TOKEN" },
    bitbucket  = { type = "bitbucket",  url = "$BB",   token = env "ATLASSIAN_TOKEN" },
  },
  sync = {
    { name = "demo", source = "okta", targets = { "jira", "confluence", "bitbucket" },
      groups = { mode = "on_the_fly", exclude = { "alumni" } },
      defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } },
      limits = { max_deprovision = "5%" } },
  },
}
CONF
export OKTA_API_TOKEN=test-token ATLASSIAN_TOKEN=test-token USERSYNC_LOG_LEVEL=warn
US="$USERSYNC"
echo "== usersync check"
"$US" check -c "$WORK/usersync.conf.lua"
echo "== usersync plan (first lines and the summary)"
"$US" plan -c "$WORK/usersync.conf.lua" > "$WORK/plan.txt"
head -n 12 "$WORK/plan.txt"
echo "   ..."
grep -E '^  [a-z]+ \(|^summary' "$WORK/plan.txt"
echo "== usersync sync"
"$US" sync -c "$WORK/usersync.conf.lua" | tail -n 1
echo "== usersync sync (again: nothing to change)"
"$US" sync -c "$WORK/usersync.conf.lua" | tail -n 1
echo "== usersync history"
"$US" history -c "$WORK/usersync.conf.lua"
echo "== what the targets hold now"
"$PY" - "$JIRA" "$CONF" "$BB" <<'PYEOF'
import json, sys, urllib.request
for name, url in zip(("jira", "confluence", "bitbucket"), sys.argv[1:]):
    st = json.load(urllib.request.urlopen(url + "/__fake/state"))
    members = sum(len(v) for v in st.get("members", {}).values())
    print(f"   {name:11s} {len(st['users']):4d} accounts, {len(st['groups']):3d} groups, {members:5d} memberships")
PYEOF
echo "== done (simulators stopped)"
