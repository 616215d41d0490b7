#!/usr/bin/env bash
# Install, make sure both sandbox backends can run (a Docker engine and the
# sandbox image, built offline from Debian packages; bubblewrap), start a
# PostgreSQL server from Debian's packages, a headless Chromium for the report's
# test, then run the whole test suite. A
# missing backend or server fails the run: no test is skipped for it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/sandbox-setup.sh
bash scripts/browser-setup.sh
MINIONFLOW_TEST_POSTGRES="$(bash scripts/postgres-setup.sh)"
case "$MINIONFLOW_TEST_POSTGRES" in
  postgresql://*) export MINIONFLOW_TEST_POSTGRES ;;
  *) echo "scripts/postgres-setup.sh printed no URL: $MINIONFLOW_TEST_POSTGRES" >&2; exit 1 ;;
esac
exec .venv/bin/python -m pytest "$@"
