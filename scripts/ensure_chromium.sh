#!/usr/bin/env bash
# Make sure headless Chromium is there for the run-report render test
# (tests/integration/test_report_render.py), which fails without it.
# Looks at $CRMSHIELD_CHROMIUM, then `chromium` / `chromium-browser` on PATH. If none is found
# and we are root on a system with apt-get, installs Debian's `chromium` package; otherwise
# prints how to install it and exits non-zero. Idempotent: a second call only checks.
set -euo pipefail

if [ -n "${CRMSHIELD_CHROMIUM:-}" ]; then
  if [ -f "$CRMSHIELD_CHROMIUM" ] && [ -x "$CRMSHIELD_CHROMIUM" ]; then
    exit 0
  fi
  echo "error: CRMSHIELD_CHROMIUM=$CRMSHIELD_CHROMIUM is not an executable file." >&2
  exit 1
fi

for candidate in chromium chromium-browser; do
  if command -v "$candidate" >/dev/null 2>&1; then
    exit 0
  fi
done

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: no Chromium found; installing the Debian package 'chromium' (headless render test of the run report)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh image may have no package lists yet: refresh them only when the first try fails.
  if ! apt-get install -y -qq --no-install-recommends chromium; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium
  fi
  if command -v chromium >/dev/null 2>&1; then
    exit 0
  fi
  echo "error: apt-get installed 'chromium' but no 'chromium' command is on PATH." >&2
  exit 1
fi

cat >&2 <<'MSG'
error: headless Chromium is required by the tests (tests/integration/test_report_render.py renders
the run report in it) and none was found on PATH.
Install it, then run `make test` again:
  Debian / Ubuntu:  sudo apt-get install -y --no-install-recommends chromium
                    (Ubuntu's package is 'chromium-browser' or the snap 'chromium')
  Fedora:           sudo dnf install chromium
  macOS:            brew install --cask chromium
or point CRMSHIELD_CHROMIUM at a Chromium or Chrome binary.
MSG
exit 1
