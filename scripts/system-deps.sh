#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real, when missing:
# redis-server (private instances per test run), Chromium (browser tests),
# PHP with curl (the documented PHP publisher is exercised) and nginx (the
# documented proxy configuration is run in front of daphne).
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The PHP publishing example in docs/publishing.md is run by the tests.
command -v php >/dev/null 2>&1 || missing+=(php-cli)
php -m 2>/dev/null | grep -qi '^curl$' || missing+=(php-curl)
# docs/deployment.md's nginx block is run by tests/test_proxy.py (nginx lives in
# /usr/sbin, which an unprivileged PATH may lack).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Missing: ${missing[*]}. Install them with your package manager (Debian/Ubuntu: apt-get install ${missing[*]})." >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "Installing ${missing[*]} from the distribution's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
