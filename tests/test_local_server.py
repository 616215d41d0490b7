"""A local model server that dies mid-run, with the real llama.cpp server: the
embedded one is restarted and the run finishes; an endpoint that stays down
stops the run as resumable, and a resume after it is back completes it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import default_remote, secret_doc
from fakes import PromptFake
from minionflow.graphs import ModelSpec, RunSettings
from minionflow.graphs.run import resume_minions, run_minions
from minionflow.nodes.embedded import default_gguf, embedded_server
from minionflow.nodes.models import DefaultModelProvider, ModelClient, Role
from minionflow.sandbox import BwrapBackend

pytestmark = pytest.mark.embedded

SETTINGS = {"chunk_tokens": 40, "max_chunk_chars": 4000, "local_concurrency": 2}


class FakeSupervisor(DefaultModelProvider):
    """A prompt-derived fake supervisor; the workers are real models over HTTP."""

    def __init__(self) -> None:
        super().__init__(timeout_s=120)
        self.remote = ModelClient(ModelSpec.parse("openai:fake-supervisor"), PromptFake(responder=default_remote),
                                  method="json_object_schema")

    def client(self, spec: ModelSpec, role: Role, max_tokens: int) -> ModelClient:
        return self.remote if role == "remote" else super().client(spec, role, max_tokens)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_embedded_server_is_restarted_and_the_run_finishes(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="minionflow.nodes.embedded")
    server = embedded_server()
    killed: list[int] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "job" and not killed:  # the first job is done: kill the server under the others
            assert server._proc is not None
            (llama,) = children(server._proc.pid)
            os.kill(llama, signal.SIGKILL)
            killed.append(llama)

    jobs: list[dict[str, Any]] = []
    result = run_minions([secret_doc()], "What is the secret number?", RunSettings(**SETTINGS), checkpoint=tmp_path,
                         sandbox=BwrapBackend(), models=FakeSupervisor(), on_event=lambda e: (on_event(e), jobs.append(e)))
    assert killed, "the server was never killed"
    assert result.status == "answered", result.error
    assert server._proc is not None and children(server._proc.pid) != killed  # a new server process
    assert result.usage is not None and result.usage.local.calls == 12  # each job counted once
    assert sum(e.get("type") == "job" for e in jobs) == 12
    assert any("is not running; restarting it" in r.getMessage() for r in caplog.records)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int | None, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A llama.cpp server on ``port`` (on a free one when None: another if that one is
    taken before the server binds it) and its port."""
    for _attempt in range(3):
        chosen = port or _free_port()
        offset = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf()), "--host", "127.0.0.1",
             "--port", str(chosen), "--n_ctx", "4096", "--verbose", "False"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{chosen}/v1/models", timeout=2).status_code == 200:
                    return proc, chosen
            except httpx.HTTPError:
                time.sleep(0.25)
        proc.kill()
        proc.wait()
        taken = "address already in use" in log.read_bytes()[offset:].decode(errors="replace").lower()
        assert port is None and taken, log.read_text()[-2000:]
    raise AssertionError("the llama.cpp server found no free port in 3 attempts")


def test_an_endpoint_that_stays_down_stops_the_run_resumable(tmp_path: Path):
    log = tmp_path / "server.log"
    server, port = start_server(None, log)
    settings = RunSettings(**SETTINGS, local=ModelSpec.parse(f"SmolLM2@http://127.0.0.1:{port}/v1"))
    first_jobs: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "job":
            first_jobs.append(event["job_id"])
            if len(first_jobs) == 2:
                server.send_signal(signal.SIGKILL)  # and it stays down
    try:
        failed = run_minions([secret_doc()], "What is the secret number?", settings, thread_id="t-down",
                             checkpoint=tmp_path, sandbox=BwrapBackend(), models=FakeSupervisor(), on_event=on_event)
        assert failed.status == "failed"
        assert failed.error is not None and "stayed unreachable after 3 attempts" in failed.error
        assert "minionflow resume t-down" in failed.error
        assert 2 <= len(first_jobs) < 12
        server, _ = start_server(port, log)  # back, where the clients point
        second_jobs: list[str] = []
        done = resume_minions("t-down", checkpoint=tmp_path, sandbox=BwrapBackend(), models=FakeSupervisor(),
                              on_event=lambda e: second_jobs.append(e["job_id"]) if e.get("type") == "job" else None)
        assert done.status == "answered", done.error
        assert sorted(first_jobs + second_jobs) == sorted(set(first_jobs + second_jobs))  # no finished job ran again
        assert len(first_jobs) + len(second_jobs) == 12
        # the first run's calls are still counted (a job's first call may be the probe that finds the
        # server rejects json_schema: a recorded failed call)
        assert done.usage is not None and done.usage.local.calls >= 12
    finally:
        server.kill()
        server.wait()


def test_the_embedded_server_takes_another_port_when_its_port_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A port found free can be taken before the server binds it; the server then
    starts on another, and the log says why."""
    from minionflow.nodes import embedded
    from minionflow.nodes.embedded import EmbeddedServer

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    first = [taken.getsockname()[1]]
    real = embedded._free_port
    monkeypatch.setattr(embedded, "_free_port", lambda: first.pop() if first else real())
    server = EmbeddedServer(default_gguf(), n_ctx=2048, log_dir=tmp_path)
    try:
        url = server.start()
        assert server.port != taken.getsockname()[1] and httpx.get(f"{url}/models", timeout=10).status_code == 200
    finally:
        server.stop()
        taken.close()
    assert "address already in use" in (tmp_path / "embedded-server.log").read_text().lower()
