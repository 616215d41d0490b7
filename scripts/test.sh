#!/usr/bin/env bash
# Install, make sure both sandbox backends can run (a Docker engine and the
# sandbox image, built offline from Debian packages; bubblewrap), then run the
# whole test suite. A missing backend fails the run: no test is skipped for it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/sandbox-setup.sh
exec .venv/bin/python -m pytest "$@"
