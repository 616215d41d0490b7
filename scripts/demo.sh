#!/usr/bin/env bash
# The main job: install, then answer a question over the shipped 114 KB sample
# report with the embedded model (offline, no API key, no Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# --remote embedded: offline even where OPENAI_API_KEY is set (an option given after it wins)
exec .venv/bin/minionflow run samples/northwind-annual-report-2025.md \
  -q "Which facility did Northwind close in fiscal 2025, and why?" --remote embedded "$@"
