#!/usr/bin/env bash
# Install, make sure both sandbox backends can run (a Docker engine and the
# sandbox image, built offline from Debian packages; bubblewrap), start a
# PostgreSQL server from Debian's packages, then run the whole test suite. A
# missing backend or server fails the run: no test is skipped for it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/sandbox-setup.sh
MINIONFLOW_TEST_POSTGRES="$(bash scripts/postgres-setup.sh)"
export MINIONFLOW_TEST_POSTGRES
exec .venv/bin/python -m pytest "$@"
