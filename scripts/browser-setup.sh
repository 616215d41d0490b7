#!/usr/bin/env bash
# A headless browser for the test of `minionflow report` (tests/test_report.py): Debian's
# chromium, installed if missing (as root). The page itself needs no browser of ours:
# any browser opens it, offline.
set -euo pipefail
log() { printf '[browser] %s\n' "$*" >&2; }
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  log "chromium is not installed: install Debian's chromium (as root), then rerun"
  exit 1
fi
command -v chromium >/dev/null 2>&1 || { log "chromium is still missing after the install"; exit 1; }
