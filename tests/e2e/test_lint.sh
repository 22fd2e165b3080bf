#!/bin/sh
# Lint: luacheck (Debian lua-check, configured by .luacheckrc) on the Lua of
# runtime/lua, scripts, tests/lua and cmake, and shellcheck (.shellcheckrc)
# on every shell script; both must be clean. tests/install-deps.sh installs
# the two tools.
set -u
cd "$SOURCE_DIR" || exit 1
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAILED: $1"; fi; }

check "luacheck is installed (Debian lua-check; tests/install-deps.sh)" 'command -v luacheck >/dev/null 2>&1'
check "shellcheck is installed (tests/install-deps.sh)" 'command -v shellcheck >/dev/null 2>&1'
if command -v luacheck >/dev/null 2>&1; then
  out=$(luacheck --no-color --formatter plain runtime/lua scripts tests/lua cmake 2>&1); rc=$?
  check "luacheck: no warning in runtime/lua, scripts, tests/lua, cmake" '[ $rc -eq 0 ] || { echo "$out"; false; }'
  # the config is what makes it clean: without it, a real warning is found
  printf 'local unused = 1\nx_global = 2\n' >"${TMPDIR:-/tmp}/lint-probe-$$.lua"
  probe=$(luacheck --no-color --formatter plain "${TMPDIR:-/tmp}/lint-probe-$$.lua" 2>&1)
  rm -f "${TMPDIR:-/tmp}/lint-probe-$$.lua"
  check "luacheck reports an unused variable and a global" 'echo "$probe" | grep -q "unused variable" && echo "$probe" | grep -q "x_global"'
fi
if command -v shellcheck >/dev/null 2>&1; then
  scripts=$(find tests scripts cmake -name '*.sh' | sort)
  # shellcheck disable=SC2086  # (one word per script)
  out=$(shellcheck $scripts 2>&1); rc=$?
  check "shellcheck: no finding in $(echo "$scripts" | wc -l) shell scripts" '[ $rc -eq 0 ] || { echo "$out"; false; }'
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
