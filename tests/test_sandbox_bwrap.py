"""What only the bubblewrap backend has to show: the helpers are inside, and the
sandbox runs as an unprivileged host user even when minionflow runs as root. The
escape suite (test_sandbox_escape.py) covers the rest, for both backends."""

from __future__ import annotations

import os
import threading
import time
import uuid

from minionflow.contracts.settings import SandboxLimits
from minionflow.sandbox import BwrapBackend, ExecutionRequest, SandboxStatus


def run_code(backend: BwrapBackend, body: str, context: list[str] | None = None, **limits) -> object:
    code = "def prepare_jobs(context, prev_job_manifests, prev_job_outputs):\n" + "\n".join(
        "    " + line for line in body.strip("\n").splitlines()
    )
    return backend.execute(ExecutionRequest(code=code, context=context or ["doc"]), SandboxLimits(**limits))


def report(backend: BwrapBackend, expr_lines: str, **limits):
    """Run code that ends by returning one job whose task is a string it computed."""
    result = run_code(backend, expr_lines, **limits)
    assert result.status is SandboxStatus.OK, result.describe()
    return result.jobs[0].task


def test_helpers_and_schemas_are_available_inside(bwrap):
    result = run_code(
        bwrap,
        "return [JobManifest(chunk=c, task='t', chunk_id=i) for i, c in enumerate(chunk_by_section(context[0], 50))]",
        context=["# A\n\nalpha text\n\n# B\n\nbeta text"],
    )
    assert result.status is SandboxStatus.OK
    assert [j.chunk for j in result.jobs] == ["# A\n\nalpha text", "# B\n\nbeta text"]


def test_runs_as_an_unprivileged_host_user(bwrap):
    marker = uuid.uuid4().hex
    found: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not found:
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
                    status = open(f"/proc/{pid}/status").read()
                except OSError:
                    continue
                if b"/usr/bin/python3" in cmdline and b"-I" in cmdline and int(pid) != os.getpid():
                    uid = next(line for line in status.splitlines() if line.startswith("Uid:"))
                    found.append(int(uid.split()[1]))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    task = report(bwrap, f"import time, os\ntime.sleep(1.5)\nreturn [JobManifest(chunk='{marker}', task=str(os.getuid()))]")
    watcher.join()
    assert task == "65534"
    assert found and all(uid != 0 for uid in found), f"host uids of sandboxed processes: {found}"
