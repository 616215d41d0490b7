#!/usr/bin/env bash
# Run the notebooks as the test suite does (embedded model, each in a data folder
# of its own), then copy the executed notebooks, outputs and all, over notebooks/:
# the outputs committed are the ones a test run printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
rm -rf build/notebooks  # only this run's notebooks are copied
.venv/bin/python -m pytest tests/test_notebooks.py -k test_notebook_runs -q "$@"
cp build/notebooks/*.ipynb notebooks/
echo "notebooks/ now holds the outputs of this run; review with git diff, then commit"
