"""`langgraph dev` serves the MinionS graph from langgraph.json, offline, over the
same checkpoint store as the CLI, SQLite or PostgreSQL: a run started through
langgraph-sdk with the embedded model, its progress events and state read back
through the SDK, the thread listed by `minionflow runs`, and a thread written by
`run_minions` opened in the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import BIN, ROOT, cli_env, default_local, default_remote, secret_doc
from fakes import FakeProvider, PromptFake
from minionflow.graphs import RunContext, RunSettings
from minionflow.graphs.run import run_minions
from minionflow.sandbox import BwrapBackend
from minionflow.serving.embedded import free_port

pytestmark = pytest.mark.embedded


@contextmanager
def serve(cwd: Path, home: Path, config: Path = ROOT / "langgraph.json", **extra: str) -> Iterator[str]:
    """`langgraph dev` on a port of its own, serving ``config``, until the block ends; its URL."""
    # nothing leaves the machine: no analytics, no version check
    env = cli_env(home, LANGGRAPH_CLI_NO_ANALYTICS="1", LANGGRAPH_NO_VERSION_CHECK="true", **extra)
    for _attempt in range(3):  # a port found free can be taken before the server binds it: try another
        port = free_port()
        log_path = cwd / f"server-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(BIN / "langgraph"), "dev", "--config", str(config), "--host", "127.0.0.1",
                 "--port", str(port), "--no-browser", "--no-reload"],
                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None:
                assert time.monotonic() < deadline, "langgraph dev did not start"
                try:
                    if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            if proc.poll() is None:
                yield url
                return
            assert "address already in use" in log_path.read_text().lower(), log_path.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    raise AssertionError("langgraph dev found no free port in 3 attempts")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    cwd = tmp_path_factory.mktemp("studio")
    with serve(cwd, cwd / "home") as url:
        yield url, cwd / "home"


def test_a_run_through_the_sdk_is_checkpointed_where_the_cli_reads(server):
    from langgraph_sdk import get_sync_client

    url, home = server
    client = get_sync_client(url=url)
    assert sorted(a["graph_id"] for a in client.assistants.search()) == ["local-only", "minion", "minions", "remote-only"]
    thread = client.threads.create()["thread_id"]
    request = {
        "question": "What is the secret number?",
        "texts": [{"title": "ledger.txt", "text": secret_doc(paragraphs=4, secret_at=2).text}],
        "settings": {"chunk_tokens": 40, "max_chunk_chars": 4000, "sandbox": "bwrap"},
    }
    events = [part.data for part in client.runs.stream(thread, "minions", input=request, stream_mode="custom", stream_subgraphs=True)
              if part.event.split("|")[0] == "custom"]  # a round's events come as "custom|round:<task id>"
    state = client.threads.get_state(thread)
    values = state["values"]
    assert state["next"] == [] and values["final"]["answer"]
    assert values["settings"]["remote"]["kind"] == "embedded" and values["settings"]["max_rounds"] == 1
    assert values["texts"] == []  # the document is in the blob store, not carried in state
    assert values["documents"][0]["title"] == "ledger.txt"
    # the nodes' progress events reach any LangGraph client
    jobs = [e for e in events if e.get("type") == "job"]
    assert len(jobs) == values["rounds"][0]["jobs"] > 0
    # (the embedded supervisor is not asked for code: a "plan" event instead of "decompose")
    assert {e["type"] for e in events} >= {"plan", "jobs", "job", "aggregate", "usage"}
    # the CLI reads the same store
    out = subprocess.run([str(BIN / "minionflow"), "runs", "--json"], capture_output=True, text=True,
                         env=cli_env(home), timeout=60)
    assert out.returncode == 0, out.stderr
    (listed,) = [t for t in json.loads(out.stdout) if t["thread_id"] == thread]
    assert listed["status"] == "answered" and listed["jobs"] == len(jobs) and listed["local_tokens"] > 0


def test_the_other_protocols_are_served_too(server):
    from langgraph_sdk import get_sync_client

    url, _ = server
    client = get_sync_client(url=url)
    thread = client.threads.create()["thread_id"]
    request = {"question": "What is the secret number?",
               "texts": [{"title": "ledger.txt", "text": secret_doc(paragraphs=3, secret_at=1).text}]}
    client.runs.wait(thread, "remote-only", input=request)
    values = client.threads.get_state(thread)["values"]
    assert values["settings"]["protocol"] == "remote-only" and values["final"]["answer"]
    assert [u["node"] for u in values["usage"]] == ["read_all_remote"]


def test_a_thread_written_by_run_minions_opens_in_the_server(server):
    from langgraph_sdk import get_sync_client

    url, home = server
    thread = str(uuid.uuid4())  # CLI thread ids are UUIDs, as the server wants
    result = run_minions([secret_doc()], "What is the secret number?",
                         RunContext(settings=RunSettings(chunk_tokens=40, max_chunk_chars=4000), sandbox=BwrapBackend(),
                                    models=FakeProvider(PromptFake(responder=default_remote), PromptFake(responder=default_local))),
                         thread_id=thread, checkpoint=home)
    assert result.status == "answered"
    client = get_sync_client(url=url)
    client.threads.create(thread_id=thread, if_exists="do_nothing", graph_id="minions")
    values = client.threads.get_state(thread)["values"]
    assert values["final"]["answer"] == "42" and values["task"] == "What is the secret number?"
    history = client.threads.get_history(thread, limit=100)
    # the run's checkpoints: the input, the start of round 1, the end (a round's own are in its subgraph)
    assert [h["next"] for h in history] == [[], ["round"], ["__start__"]]


def test_studio_on_postgresql(tmp_path):
    """With ``$MINIONFLOW_CHECKPOINT`` a PostgreSQL URL, the server keeps its threads
    there: a run through the SDK is listed by `minionflow runs --checkpoint URL`, and
    a thread `run_minions` wrote to the database opens in the server."""
    from conftest import create_database
    from langgraph_sdk import get_sync_client

    database = create_database()
    home = tmp_path / "home"
    written = str(uuid.uuid4())
    result = run_minions([secret_doc()], "What is the secret number?",
                         RunContext(settings=RunSettings(chunk_tokens=40, max_chunk_chars=4000), sandbox=BwrapBackend(),
                                    models=FakeProvider(PromptFake(responder=default_remote), PromptFake(responder=default_local))),
                         thread_id=written, checkpoint=database)
    assert result.status == "answered"
    with serve(tmp_path, home, MINIONFLOW_CHECKPOINT=database) as url:
        client = get_sync_client(url=url)
        client.threads.create(thread_id=written, if_exists="do_nothing", graph_id="minions")
        assert client.threads.get_state(written)["values"]["final"]["answer"] == "42"
        thread = client.threads.create()["thread_id"]
        request = {"question": "What is the secret number?",
                   "texts": [{"title": "ledger.txt", "text": secret_doc(paragraphs=3, secret_at=1).text}]}
        client.runs.wait(thread, "remote-only", input=request)
        assert client.threads.get_state(thread)["values"]["final"]["answer"]
    out = subprocess.run([str(BIN / "minionflow"), "runs", "--json", "--checkpoint", database], capture_output=True,
                         text=True, env=cli_env(home), timeout=60)
    assert out.returncode == 0, out.stderr
    listed = {t["thread_id"]: t for t in json.loads(out.stdout)}
    assert listed[thread]["protocol"] == "remote-only" and listed[thread]["status"] == "answered"
    assert listed[written]["status"] == "answered" and listed[written]["jobs"] == 12
