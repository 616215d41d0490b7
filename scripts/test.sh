#!/usr/bin/env bash
# Install, make sure both sandbox backends can run (a Docker engine and the
# sandbox image, built offline from Debian packages; bubblewrap), start a
# PostgreSQL server from Debian's packages, a headless Chromium for the report's
# test, then run the whole test suite. A
# missing backend or server fails the run: no test is skipped for it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/sandbox-setup.sh
bash scripts/browser-setup.sh
MINIONFLOW_TEST_POSTGRES="$(bash scripts/postgres-setup.sh)"
case "$MINIONFLOW_TEST_POSTGRES" in
  postgresql://*) export MINIONFLOW_TEST_POSTGRES ;;
  *) echo "scripts/postgres-setup.sh printed no URL: $MINIONFLOW_TEST_POSTGRES" >&2; exit 1 ;;
esac
# With two cores or more the suite runs as two pytest processes side by side, each on its
# own cores (taskset): the tests of the real embedded model (-m embedded) on the first
# half, the rest on the others. llama.cpp's threads wait for each other at every step,
# so a server whose core another process takes stalls; on its own cores the embedded
# server runs one thread per core (serving.embedded.usable_cpus). The arguments go to both
# (a path or -k narrows each; -m overrides the split). The embedded half's report follows
# the other's; MINIONFLOW_TEST_ONE_PROCESS=1 runs one pytest on every core instead.
cpus="$(nproc)"
if [ "$cpus" -lt 2 ] || [ -n "${MINIONFLOW_TEST_ONE_PROCESS:-}" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# the cores this script may use (nproc counts them), split in two lists
read -r first others < <(.venv/bin/python -c 'import os; c = sorted(os.sched_getaffinity(0)); h = len(c) // 2
print(",".join(map(str, c[:h])), ",".join(map(str, c[h:])))')
tmp="$(mktemp -d)"
embedded=""
# an interrupted run stops the embedded half too (its model servers end with their CLI)
trap 'if [ -n "$embedded" ]; then kill "$embedded" 2>/dev/null || true; fi; rm -rf "$tmp"' EXIT
taskset -c "$first" .venv/bin/python -m pytest -m "embedded or beside_embedded" --basetemp "$tmp/embedded" "$@" \
  > "$tmp/embedded.log" 2>&1 &
embedded=$!
rest=0
taskset -c "$others" .venv/bin/python -m pytest -m "not embedded and not beside_embedded" --basetemp "$tmp/rest" "$@" || rest=$?
echo
echo "=== the tests of the embedded model and those beside it (pytest -m 'embedded or beside_embedded', on cores $first), run beside the above ==="
waited=0
wait "$embedded" || waited=$?
embedded=""
cat "$tmp/embedded.log"
# 5: pytest selected no test in that half (a path or -k that names none of its tests)
for status in "$rest" "$waited"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
done
if [ "$rest" -eq 5 ] && [ "$waited" -eq 5 ]; then exit 5; fi
