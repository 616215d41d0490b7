# The sandbox image for compose.yaml: a slim Python and the runner, nothing else
# (no minionflow, no keys). The runner is assembled as minionflow.sandbox.base.
# runner_source() does (the chunking helpers, then the runner; a test checks it).
ARG PYTHON=python:3.11-slim-bookworm
FROM ${PYTHON}
COPY sandbox/chunking.py sandbox/runner.py /tmp/src/
RUN mkdir -p /opt/minionflow \
 && { cat /tmp/src/chunking.py; printf '\n\n'; cat /tmp/src/runner.py; } > /opt/minionflow/sandbox_runner.py \
 && chmod 0444 /opt/minionflow/sandbox_runner.py \
 && rm -r /tmp/src
USER 65534:65534
WORKDIR /tmp
