"""A local model server that dies mid-run: the embedded one (the real llama.cpp server)
is restarted and the run finishes; a served endpoint that stays down (a real
OpenAI-compatible HTTP server, killed) stops the run as resumable, and a resume after
it is back completes it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import default_local, default_remote, secret_doc
from fakes import PromptFake
from minionflow.graphs import ModelSpec, RunContext, RunSettings
from minionflow.graphs.run import resume_minions, run_minions
from minionflow.sandbox import BwrapBackend
from minionflow.serving.embedded import default_gguf, embedded_server
from minionflow.serving.models import DefaultModelProvider, ModelClient, Role
from openai_server import OpenAIServer

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
    caplog.set_level(logging.WARNING, logger="minionflow.serving.embedded")
    server = embedded_server()
    killed: list[int] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "job" and not killed:  # the first job is done: kill the server under the others
            assert server._proc is not None
            (llama,) = children(server._proc.pid)
            os.kill(llama, signal.SIGKILL)
            killed.append(llama)

    jobs: list[dict[str, Any]] = []
    result = run_minions([secret_doc()], "What is the secret number?",
                         RunContext(settings=RunSettings(**SETTINGS), sandbox=BwrapBackend(), models=FakeSupervisor(),
                                    on_event=lambda e: (on_event(e), jobs.append(e))),
                         checkpoint=tmp_path)
    assert killed, "the server was never killed"
    assert result.status == "answered", result.error
    assert server._proc is not None and children(server._proc.pid) != killed  # a new server process
    assert result.usage is not None and result.usage.local.calls == 12  # each job counted once
    assert sum(e.get("type") == "job" for e in jobs) == 12
    assert any("is not running; restarting it" in r.getMessage() for r in caplog.records)


def slow_local(prompt: str) -> str:
    time.sleep(0.05)  # jobs in flight when the server dies
    return default_local(prompt)


def test_an_endpoint_that_stays_down_stops_the_run_resumable(tmp_path: Path):
    server = OpenAIServer(slow_local)
    port = int(server.start().rsplit(":", 1)[1].split("/")[0])
    settings = RunSettings(**SETTINGS, local=ModelSpec.parse(f"SmolLM2@http://127.0.0.1:{port}/v1"))
    first_jobs: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "job":
            first_jobs.append(event["job_id"])
            if len(first_jobs) == 2:
                server.kill()  # and it stays down
    try:
        failed = run_minions([secret_doc()], "What is the secret number?",
                             RunContext(settings=settings, sandbox=BwrapBackend(), models=FakeSupervisor(),
                                        on_event=on_event),
                             thread_id="t-down", checkpoint=tmp_path)
        assert failed.status == "failed"
        assert failed.error is not None and "stayed unreachable after 3 attempts" in failed.error
        assert "minionflow resume t-down" in failed.error
        assert 2 <= len(first_jobs) < 12
        server = OpenAIServer(slow_local, port=port)  # back, where the clients point
        server.start()
        second_jobs: list[str] = []
        done = resume_minions("t-down", checkpoint=tmp_path,
                              context=RunContext(sandbox=BwrapBackend(), models=FakeSupervisor(),
                                                 on_event=lambda e: second_jobs.append(e["job_id"]) if e.get("type") == "job" else None))
        assert done.status == "answered", done.error
        assert sorted(first_jobs + second_jobs) == sorted(set(first_jobs + second_jobs))  # no finished job ran again
        assert len(first_jobs) + len(second_jobs) == 12
        # the first run's calls are still counted, each job answered once
        assert done.usage is not None and done.usage.local.calls == 12
    finally:
        server.stop()


def test_the_embedded_server_takes_another_port_when_its_port_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A port found free can be taken before the server binds it; the server then
    starts on another, and the log says why."""
    from minionflow.serving import embedded
    from minionflow.serving.embedded import EmbeddedServer

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    first = [taken.getsockname()[1]]
    real = embedded.free_port
    monkeypatch.setattr(embedded, "free_port", lambda: first.pop() if first else real())
    server = EmbeddedServer(default_gguf(), n_ctx=2048, log_dir=tmp_path)
    try:
        url = server.start()
        assert server.port != taken.getsockname()[1] and httpx.get(f"{url}/models", timeout=10).status_code == 200
    finally:
        server.stop()
        taken.close()
    assert "address already in use" in (tmp_path / "embedded-server.log").read_text().lower()
