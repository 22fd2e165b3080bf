#!/bin/sh
# The systemd units in scripts/systemd: `systemd-analyze verify` finds
# nothing (with ExecStart= pointed at the built binary, the only path that
# differs on a test machine), and the units do what their comments say:
# the timer's Persistent= comes with OnCalendar= (with OnUnitActiveSec=
# alone it does nothing), and the services run as a user systemd creates
# (DynamicUser=) with their state directory made for it (StateDirectory=),
# not as a `usersync` account nothing creates.
set -u
cd "$SOURCE_DIR" || exit 1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAILED: $1"; fi; }
U=scripts/systemd

key() { sed -n "s/^$2=//p" "$1"; }   # the values of key $2 in unit file $1

check "the timer's Persistent=true comes with OnCalendar=" \
  '[ "$(key $U/usersync-sync.timer Persistent)" != true ] || [ -n "$(key $U/usersync-sync.timer OnCalendar)" ]'
check "the timer runs every 30 minutes" '[ "$(key $U/usersync-sync.timer OnCalendar)" = "*:00/30" ]'
for s in usersync-sync.service usersync.service; do
  check "$s: DynamicUser=yes" '[ "$(key $U/$s DynamicUser)" = yes ]'
  check "$s: StateDirectory=usersync (the store's /var/lib/usersync)" '[ "$(key $U/$s StateDirectory)" = usersync ]'
  check "$s: no User= naming an account nothing creates" '[ -z "$(key $U/$s User)" ]'
  check "$s: the install steps create no account" '! grep -q "install -d -o usersync" $U/$s'
done

if command -v systemd-analyze >/dev/null 2>&1; then
  cp $U/*.service $U/*.timer "$TMP/"
  sed -i "s|^ExecStart=/usr/local/bin/usersync |ExecStart=$USERSYNC |" "$TMP"/*.service
  check "ExecStart= points at the built binary" 'grep -q "^ExecStart=$USERSYNC " "$TMP/usersync.service"'
  out=$(cd "$TMP" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify ./usersync-sync.service ./usersync-sync.timer ./usersync.service 2>&1); rc=$?
  check "systemd-analyze verify: clean" '[ $rc -eq 0 ] && [ -z "$out" ] || { echo "$out"; false; }'
  # and verify does catch a broken unit (the check can fail)
  sed 's/^Type=oneshot/Type=nosuchtype/' "$TMP/usersync-sync.service" >"$TMP/broken.service"
  out=$(cd "$TMP" && systemd-analyze verify ./broken.service 2>&1)
  check "systemd-analyze verify reports a bad unit" 'echo "$out" | grep -qi "nosuchtype"'
  calendar=$(systemd-analyze calendar --iterations=2 "*:00/30" 2>&1)
  check "OnCalendar=*:00/30 is every half hour" 'echo "$calendar" | grep -q "Iter. #2"'
else
  echo "SKIPPED: systemd-analyze is not installed (Debian package systemd); the units were not verified"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
