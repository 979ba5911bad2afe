#!/usr/bin/env bash
# Make sure a Chromium for the browser tests is installed: SONICSORT_CHROMIUM if set, else
# Debian's `chromium` package (installed when missing). Playwright drives it as it is, so
# nothing is downloaded from outside the package registries.
set -euo pipefail

if [ -n "${SONICSORT_CHROMIUM:-}" ] && [ -x "$SONICSORT_CHROMIUM" ]; then
  echo "chromium: $SONICSORT_CHROMIUM"
  exit 0
fi
if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(command -v chromium)"
  exit 0
fi
echo "chromium: installing Debian's chromium for the browser tests"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "chromium: could not install Debian's chromium" >&2; exit 1; }
echo "chromium: $(command -v chromium)"
