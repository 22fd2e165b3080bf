#!/bin/sh
# Installs the Debian 12 packages usersync needs to build, test and run the
# demo (headless Chromium, its WebDriver and Selenium: the status page's
# browser test, tests/lua/test_status_browser.lua). Installs only what is
# missing; needs root (or sudo) when something is.
set -eu
PKGS="build-essential cmake pkg-config git ca-certificates curl openssl
liblua5.4-dev libcurl4-openssl-dev libpcre2-dev libsqlite3-dev
libssl-dev libmicrohttpd-dev python3 python3-yaml python3-jsonschema valgrind wrk procps time
groff-base man-db lua-check shellcheck systemd
chromium chromium-driver python3-selenium fonts-dejavu-core"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm: tests/contract installs its validating proxy (Prism, which asks for Node.js >= 18.20.1)
# with it. A Node.js that brings its own npm is kept; Debian's are added only without any npm.
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root to install:$missing" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-deps: installing$missing"
$SUDO apt-get update -qq
# (the list is split into words on purpose)
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
