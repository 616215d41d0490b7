"""The bubblewrap backend: Linux namespaces for machines without a Docker engine.

Hardening (docs/architecture.md, guarantee 2):

* bwrap is launched as an unprivileged user (when minionflow runs as root, the
  child drops to ``nobody``, or the backend's ``uid``, before exec), so uid 65534
  inside is not host root
  and process limits are enforced;
* the launcher's own environment is minimal (``/proc/1/environ`` inside shows
  only it), and ``--clearenv`` empties the sandboxed program's environment;
* ``--unshare-all --unshare-user --disable-userns --cap-drop ALL
  --die-with-parent --new-session``; ``/usr`` is bound read-only, ``/proc/sys``
  read-only, ``/tmp`` is a size-limited tmpfs and the root is remounted
  read-only last;
* a seccomp filter (``sandbox/seccomp.py``, compiled with libseccomp) refuses
  ptrace, new namespaces, mounts, keyrings, eBPF, perf, io_uring, userfaultfd,
  non-Unix sockets and the other kernel interfaces job preparation never needs;
* the runner lowers its own rlimits (CPU, address space, processes, file size,
  open files) before it executes the supervisor's code, and the host kills the
  whole sandbox (pid namespace) past the wall-clock limit.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

from .base import (
    ExecutionRequest,
    ExecutionResult,
    SandboxLimits,
    SandboxStatus,
    SandboxUnavailable,
    limit_message,
    parse_runner_output,
    runner_source,
)
from .seccomp import SeccompUnavailable, compiled_filter, filter_fd

log = logging.getLogger(__name__)

NOBODY = 65534
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_MINIMAL_ENV = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}


@dataclass
class _Captured:
    data: bytearray = field(default_factory=bytearray)
    overflow: bool = False


def _read_capped(stream, cap: int, sink: _Captured, on_overflow) -> None:  # type: ignore[no-untyped-def]
    while True:
        block = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not block:
            return
        room = cap - len(sink.data)
        if len(block) > room:
            sink.data.extend(block[: max(room, 0)])
            sink.overflow = True
            on_overflow()
            return
        sink.data.extend(block)


def _write_all(stream, data: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        stream.write(data)
        stream.close()
    except (BrokenPipeError, OSError):
        pass  # the program exited or was killed before reading everything


class BwrapBackend:
    """Runs the runner under ``bwrap`` as a separate, unprivileged process."""

    name = "bwrap"

    def __init__(self, bwrap: str | None = None, python: str = "/usr/bin/python3", seccomp: bool = True,
                 uid: int = NOBODY) -> None:
        self.bwrap = bwrap or os.environ.get("MINIONFLOW_BWRAP") or shutil.which("bwrap") or "/usr/bin/bwrap"
        self.python = python
        self.seccomp = seccomp  # False runs without the filter: weaker, for kernels that refuse it
        # The host user (and group) bwrap drops to when minionflow runs as root; inside, the
        # code is nobody either way. The process limit counts every process of this user on
        # the machine, so an unused uid keeps a sandbox's count, and the processes one can
        # tell are its own, apart from every other sandbox's (the escape suite does so).
        self.uid = uid

    # -- availability -----------------------------------------------------------------
    @cached_property
    def _unavailable_reason(self) -> str | None:
        if not os.path.exists(self.bwrap):
            return (
                "bubblewrap is not installed: install it (Debian/Ubuntu: apt-get install bubblewrap) "
                "or choose another sandbox backend"
            )
        if not os.path.exists(self.python) or not os.stat(self.python).st_mode & 0o005:
            return f"{self.python} is missing or not world-executable; the bwrap sandbox needs a system Python 3"
        if self.seccomp:
            try:
                compiled_filter()
            except SeccompUnavailable as exc:
                return f"the bwrap sandbox's seccomp filter cannot be built: {exc}"
        probe = self._run(b'{"code": "def prepare_jobs(c, m, o):\\n    return []", "context": []}', SandboxLimits(timeout_s=20))
        if probe.status is not SandboxStatus.OK:
            return (
                "bubblewrap cannot create a sandbox here (unprivileged user namespaces may be disabled: "
                f"sysctl kernel.unprivileged_userns_clone=1): {probe.error}"
            )
        return None

    def check(self) -> None:
        if self._unavailable_reason:
            raise SandboxUnavailable(self._unavailable_reason)

    # -- execution --------------------------------------------------------------------
    def command(self, limits: SandboxLimits, seccomp_fd: int | None = None) -> list[str]:
        """The bwrap command line; ``seccomp_fd`` is an open descriptor holding the filter."""
        return [
            self.bwrap,
            *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--uid", str(NOBODY),
            "--gid", str(NOBODY),
            "--cap-drop", "ALL",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv", "PATH", SANDBOX_PATH,
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "HOME", "/tmp",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
            "--proc", "/proc",
            "--dev", "/dev",
            "--ro-bind", "/proc/sys", "/proc/sys",
            "--size", str(limits.tmpfs_mb * 1024 * 1024),
            "--tmpfs", "/tmp",
            "--chdir", "/tmp",
            "--remount-ro", "/",
            self.python, "-I", "-S", "-c", runner_source(),
        ]

    def execute(self, request: ExecutionRequest, limits: SandboxLimits) -> ExecutionResult:
        self.check()
        result = self._run(request.runner_input(limits), limits, max_jobs=request.max_jobs)
        log.info("bwrap execution: %s in %.3fs", result.status.value, result.duration_s)
        return result

    def _run(self, stdin: bytes, limits: SandboxLimits, max_jobs: int = 1000) -> ExecutionResult:
        drop = os.geteuid() == 0
        started = time.monotonic()
        seccomp_fd = filter_fd() if self.seccomp else None
        try:
            proc = subprocess.Popen(
                self.command(limits, seccomp_fd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(_MINIMAL_ENV),
                cwd="/",
                close_fds=True,
                pass_fds=() if seccomp_fd is None else (seccomp_fd,),
                start_new_session=True,
                user=self.uid if drop else None,
                group=self.uid if drop else None,
                extra_groups=[] if drop else None,
            )
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)  # bwrap has its own copy
        out, err = _Captured(), _Captured()
        kill = lambda: _kill(proc)  # noqa: E731
        threads = [
            threading.Thread(target=_write_all, args=(proc.stdin, stdin), daemon=True),
            threading.Thread(target=_read_capped, args=(proc.stdout, limits.max_output_bytes, out, kill), daemon=True),
            threading.Thread(target=_read_capped, args=(proc.stderr, limits.max_log_bytes, err, lambda: None), daemon=True),
        ]
        for t in threads:
            t.start()
        timed_out = False
        try:
            # Wait on the end of stdout (a thread join wakes at once), not on
            # Popen.wait(timeout), which polls with sleeps of up to 50 ms.
            threads[1].join(timeout=limits.timeout_s)
            if threads[1].is_alive():
                timed_out = True
                kill()
            proc.wait(timeout=max(limits.timeout_s - (time.monotonic() - started), 0.5))
        except subprocess.TimeoutExpired:
            timed_out = True
            kill()
            proc.wait()
        except BaseException:
            kill()
            proc.wait()
            raise
        for t in threads:
            t.join(timeout=5)
        duration = time.monotonic() - started
        logtext = err.data.decode("utf-8", "replace")
        if timed_out or out.overflow:
            status = SandboxStatus.TIMEOUT if timed_out else SandboxStatus.OUTPUT_TRUNCATED
            error = limit_message(status, limits)
        elif not out.data:
            status, error = SandboxStatus.ERROR, _exit_message(proc.returncode, logtext)
        else:
            return parse_runner_output(bytes(out.data), logtext, duration, self.name, max_jobs)
        return ExecutionResult(status=status, error=error, log=logtext, duration_s=duration, backend=self.name)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill bwrap; --die-with-parent then tears down the whole pid namespace."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass


def _exit_message(code: int, stderr: str) -> str:
    tail = stderr.strip().splitlines()[-3:]
    how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return f"the sandboxed program {how} without a result" + (": " + " | ".join(tail) if tail else "")
