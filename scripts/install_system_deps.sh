#!/usr/bin/env bash
# System packages the test suite runs for real, from Debian's packages, installed only when missing:
#   postgresql                 a server the multi-worker tests start as a temporary cluster (tests/_pg.py)
#   chromium, chromium-driver  the headless browser of the dashboard and HTML-report tests
# Needs root (or sudo). Set DMO_SKIP_SYSDEPS=1 to skip; the tests that need a missing part then skip
# with the reason.
set -euo pipefail
[ "${DMO_SKIP_SYSDEPS:-0}" = 1 ] && exit 0
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
