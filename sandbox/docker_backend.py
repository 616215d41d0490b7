"""The Docker backend: one fresh, hardened container per execution (Docker SDK).

No network, read-only root, a size-limited tmpfs for /tmp, all capabilities
dropped, no-new-privileges, user nobody, pids / memory (swap equal) / CPU limits,
logging off, an init process, an empty environment, a wall-clock timeout and an
output cap. Code and inputs go in over stdin (attach socket, written from a
thread); the container is removed on every path. On timeout or output cap the
attach socket is closed before the kill (otherwise the kill can hang a minute).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from functools import cached_property
from typing import Any

from .base import (
    ExecutionRequest,
    ExecutionResult,
    SandboxLimits,
    SandboxStatus,
    SandboxUnavailable,
    limit_message,
    parse_runner_output,
)
from .image import RUNNER_PATH, image_tag

log = logging.getLogger(__name__)

NOBODY = 65534
LABEL = "io.minionflow.sandbox"
OWNER_LABEL = "io.minionflow.owner-pid"
HOST = socket.gethostname()


class DockerBackend:
    name = "docker"

    def __init__(self, image: str | None = None, runtime: str | None = None, uid: int = NOBODY) -> None:
        # MINIONFLOW_SANDBOX_IMAGE: an image built elsewhere (compose.yaml builds minionflow-sandbox:compose)
        self.image = image or os.environ.get("MINIONFLOW_SANDBOX_IMAGE") or image_tag()
        self.runtime = runtime
        # the user (and group) the code runs as, nobody by default: an unused uid keeps the
        # container's processes apart from every other sandbox's on the host (the escape
        # suite tells its own leftovers by it)
        self.uid = uid

    @cached_property
    def client(self) -> Any:
        import docker
        from docker.errors import DockerException

        try:
            client = docker.from_env(timeout=60)
            client.ping()
        except DockerException as exc:
            raise SandboxUnavailable(
                f"no Docker engine answers ({type(exc).__name__}); start one (scripts/docker-engine.sh) "
                "or choose --sandbox bwrap"
            ) from exc
        return client

    @cached_property
    def _swept(self) -> int:
        """Remove the containers of minionflow processes on this host that died
        (a SIGKILL cannot run our clean-up): once per backend."""
        removed = 0
        for container in self.client.containers.list(all=True, filters={"label": f"{LABEL}={HOST}"}):
            try:
                os.kill(int(container.labels.get(OWNER_LABEL, "0")), 0)
                continue  # its owner is alive
            except ProcessLookupError:
                pass
            except (PermissionError, ValueError):
                continue
            try:
                container.remove(force=True)
                removed += 1
            except Exception as exc:  # noqa: BLE001 - best effort
                log.warning("could not remove stale sandbox container %s: %s", container.short_id, exc)
        if removed:
            log.warning("removed %d sandbox container(s) left by killed minionflow processes", removed)
        return removed

    def check(self) -> None:
        log.debug("%d stale sandbox container(s) removed", self._swept)
        if self.runtime and self.runtime not in (self.client.info().get("Runtimes") or {}):
            raise SandboxUnavailable(f"the Docker engine has no runtime {self.runtime!r} (is gVisor installed?)")
        if not self.client.images.list(name=self.image):
            raise SandboxUnavailable(
                f"the sandbox image {self.image} is missing or stale; build it: python -m minionflow.sandbox.image"
            )

    def execute(self, request: ExecutionRequest, limits: SandboxLimits) -> ExecutionResult:
        self.check()
        started = time.monotonic()
        memory = f"{limits.memory_mb}m"
        container = self.client.containers.create(
            self.image,
            command=["python3", "-I", "-S", RUNNER_PATH],
            stdin_open=True,
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"size={limits.tmpfs_mb}m,mode=1777,noexec,nosuid,nodev"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            user=f"{self.uid}:{self.uid}",
            pids_limit=limits.processes + 4,
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=1_000_000_000,
            log_config={"type": "none"},
            init=True,
            environment={},
            working_dir="/tmp",
            runtime=self.runtime,
            labels={LABEL: HOST, OWNER_LABEL: str(os.getpid())},
        )
        try:
            result = self._run(container, request.runner_input(limits), limits, request.max_jobs, started)
        finally:
            try:
                container.remove(force=True)
            except Exception as exc:  # noqa: BLE001 - a leftover container is logged, not fatal
                log.warning("could not remove sandbox container %s: %s", container.short_id, exc)
        log.info("docker execution: %s in %.3fs", result.status.value, result.duration_s)
        return result

    def _run(self, container: Any, stdin: bytes, limits: SandboxLimits, max_jobs: int, started: float) -> ExecutionResult:
        attach = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        sock: socket.socket = attach._sock
        container.start()

        def feed() -> None:
            try:
                sock.sendall(stdin)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the program exited or was killed before reading everything

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        out, err = bytearray(), bytearray()
        deadline = started + limits.timeout_s
        status: SandboxStatus | None = None
        try:
            status = _read_frames(sock, out, err, deadline, limits)
        finally:
            _close(sock, attach)  # before any kill: a full attach stream makes the kill hang
        if status is not None:
            try:
                container.kill()
            except Exception:  # noqa: BLE001 - it may have exited meanwhile
                pass
        exit_code = container.wait(timeout=30).get("StatusCode", -1)
        duration = time.monotonic() - started
        logtext = err.decode("utf-8", "replace")
        if status is not None:
            error = limit_message(status, limits)
        elif exit_code == 137 and not out:
            status, error = SandboxStatus.MEMORY, "the container was killed (out of memory)"
        elif not out:
            status, error = SandboxStatus.ERROR, f"the sandboxed program exited with status {exit_code} without a result"
        else:
            return parse_runner_output(bytes(out), logtext, duration, self.name, max_jobs)
        return ExecutionResult(status=status, error=error, log=logtext, duration_s=duration, backend=self.name)


def _close(sock: socket.socket, attach: Any) -> None:
    """Shut the attach connection down for every holder of the descriptor, then close it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    for closable in (sock, attach):
        try:
            closable.close()
        except OSError:
            pass


def _read_frames(sock: socket.socket, out: bytearray, err: bytearray, deadline: float, limits: SandboxLimits) -> SandboxStatus | None:
    """Read Docker's multiplexed stream (8-byte headers) until EOF; return TIMEOUT or
    OUTPUT_TRUNCATED when a limit stops it, None at a normal end."""
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return SandboxStatus.TIMEOUT
        sock.settimeout(remaining)
        try:
            block = sock.recv(65536)
        except TimeoutError:
            return SandboxStatus.TIMEOUT
        except OSError:
            return None
        if not block:
            return None
        buffer.extend(block)
        while len(buffer) >= 8:
            kind, size = struct.unpack(">BxxxL", bytes(buffer[:8]))
            if len(buffer) < 8 + size:
                break
            payload = bytes(buffer[8 : 8 + size])
            del buffer[: 8 + size]
            if kind == 1:
                out.extend(payload)
                if len(out) > limits.max_output_bytes:
                    return SandboxStatus.OUTPUT_TRUNCATED
            elif len(err) < limits.max_log_bytes:
                err.extend(payload[: limits.max_log_bytes - len(err)])
