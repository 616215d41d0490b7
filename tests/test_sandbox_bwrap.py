"""The bubblewrap backend's promises for this issue: unprivileged launch, minimal
environment, no network, no writes outside its tmpfs, no API key anywhere inside,
killed past its time limit, and typed results."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid

import pytest
from minionflow.sandbox import BwrapBackend, ExecutionRequest, SandboxLimits, SandboxStatus, SandboxUnavailable
from minionflow.sandbox.select import get_backend


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


def test_no_network(bwrap):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    task = report(bwrap, f"""
import socket
out = []
for host in ('127.0.0.1', '1.1.1.1'):
    try:
        socket.create_connection((host, {port} if host == '127.0.0.1' else 53), timeout=2)
        out.append(host + ':connected')
    except OSError as e:
        out.append(host + ':' + type(e).__name__)
try:
    socket.getaddrinfo('example.com', 80)
    out.append('dns:resolved')
except OSError as e:
    out.append('dns:' + type(e).__name__)
import os
out.append('ifaces:' + ','.join(sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else []))
return [JobManifest(chunk='x', task=' '.join(out))]
""")
    t.join()
    server.close()
    assert not accepted, "the sandbox reached a server on the host's loopback"
    assert "connected" not in task and "dns:resolved" not in task, task
    assert "127.0.0.1:ConnectionRefusedError" in task


def test_no_writes_outside_tmpfs_and_nothing_persists(bwrap, tmp_path):
    task = report(bwrap, """
out = []
for path in ('/evil', '/usr/evil', '/usr/bin/python3', '/proc/sys/kernel/hostname'):
    try:
        open(path, 'w').write('x')
        out.append(path + ':written')
    except OSError as e:
        out.append(path + ':' + type(e).__name__)
open('/tmp/state-from-run-one', 'w').write('left behind')
return [JobManifest(chunk='x', task=' '.join(out))]
""")
    assert "written" not in task, task
    second = report(bwrap, "import os\nreturn [JobManifest(chunk='x', task=repr(os.listdir('/tmp')))]")
    assert second == "[]"
    root = report(bwrap, "import os\nreturn [JobManifest(chunk='x', task=' '.join(sorted(os.listdir('/'))))]")
    assert set(root.split()) <= {"bin", "dev", "lib", "lib64", "proc", "tmp", "usr"}, root
    assert str(tmp_path) not in root


def test_no_api_key_in_environment_or_proc(bwrap, monkeypatch):
    canary = "sk-canary-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    monkeypatch.setenv("MINIONFLOW_CANARY", canary)
    task = report(bwrap, """
import os
seen = [k + '=' + v for k, v in os.environ.items()]
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            seen.append(open('/proc/%s/environ' % pid, 'rb').read().decode('utf-8', 'replace'))
        except OSError:
            pass
return [JobManifest(chunk='x', task='\\n'.join(seen) or 'empty')]
""")
    assert canary not in task
    assert "OPENAI_API_KEY" not in task and "MINIONFLOW_CANARY" not in task
    assert "PATH=" in task  # the minimal environment is all there is


def test_killed_past_time_limit_and_nothing_left_behind(bwrap):
    marker = uuid.uuid4().hex
    started = time.monotonic()
    result = run_code(bwrap, f"# {marker}\nimport subprocess\nsubprocess.Popen(['/usr/bin/python3', '-c', 'import time; time.sleep(60)  # {marker}'])\nwhile True:\n    pass",
                      timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert result.status is SandboxStatus.TIMEOUT
    assert "1s limit" in result.error
    assert elapsed < 2.0 + 1.0
    time.sleep(0.3)
    leftovers = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert leftovers == []


def test_typed_results_for_bad_programs(bwrap):
    assert run_code(bwrap, "return 'not a list'").status is SandboxStatus.ERROR
    wrong = run_code(bwrap, "return [1, 2]")
    assert wrong.status is SandboxStatus.ERROR and "item 0 is int" in wrong.error
    missing = bwrap.execute(ExecutionRequest(code="x = 1", context=["d"]), SandboxLimits())
    assert missing.status is SandboxStatus.ERROR and "must define a function prepare_jobs" in missing.error
    syntax = bwrap.execute(ExecutionRequest(code="def prepare_jobs(:\n", context=["d"]), SandboxLimits())
    assert syntax.status is SandboxStatus.ERROR and "SyntaxError" in syntax.error
    flood = run_code(bwrap, "return [JobManifest(chunk='x', task='t') for _ in range(5000)]")
    assert flood.status is SandboxStatus.ERROR and "more than 1000 jobs" in flood.error
    noisy = run_code(bwrap, "print('hello from the supervisor')\nreturn [JobManifest(chunk='x', task='t')]")
    assert noisy.status is SandboxStatus.OK and "hello from the supervisor" in noisy.log
    garbage = run_code(bwrap, "import os\nos.write(3, b'garbage')\nos._exit(0)")
    assert garbage.status is SandboxStatus.INVALID_OUTPUT
    memory = run_code(bwrap, "x = bytearray(2 * 1024 ** 3)\nreturn []", memory_mb=256)
    assert memory.status is SandboxStatus.MEMORY


def test_large_context_round_trips(bwrap):
    doc = ("lorem ipsum dolor sit amet " * 80_000)[: 2 * 1024 * 1024]
    result = run_code(bwrap, "return [JobManifest(chunk=context[0], task=str(len(context[0])))]", context=[doc])
    assert result.status is SandboxStatus.OK
    assert result.jobs[0].task == str(len(doc)) and result.jobs[0].chunk == doc


def test_missing_bubblewrap_fails_closed():
    backend = BwrapBackend(bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="bubblewrap is not installed"):
        backend.check()
    with pytest.raises(SandboxUnavailable, match="unknown sandbox backend"):
        get_backend("chroot")
