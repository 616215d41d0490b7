#!/usr/bin/env bash
# Both sandbox backends: bubblewrap (installed by setup.sh), and Docker: an engine
# (scripts/docker-engine.sh) plus the sandbox image, built offline with debootstrap
# (Debian's package mirror is the only network it needs) and tagged by content hash.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
fi
bash scripts/docker-engine.sh
.venv/bin/python -m minionflow.sandbox.image
