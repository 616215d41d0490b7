"""Adding a protocol is one module: a package of its own (here written to a folder on
``PYTHONPATH``, with the ``.dist-info`` an installed package has) names a ``Protocol`` under
the ``minionflow.protocols`` entry point, and nothing else of minionflow changes. The
protocol, "one-shot", lets the local model read the documents whole and answer; it runs
through ``minionflow run``, ``show`` and ``runs``, ``minionflow eval``, and
``langgraph dev`` with the ``studio-config`` minionflow writes (the graph list Studio shows,
and a run through the LangGraph SDK). The models are the OpenAI-compatible test server."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import CLI, SUBPROCESS_TIMEOUT, cli_env, secret_doc
from openai_server import OpenAIServer

QUESTION = "What is the secret number?"

PROTOCOL_MODULE = '''
"""one-shot: the local model reads every document in one prompt and answers in one line."""

from langchain_core.messages import HumanMessage
from langgraph.graph import END
from minionflow.contracts.protocol import Protocol
from minionflow.contracts.state import FinalAnswer, RunState
from minionflow.graphs import add_entry, new_builder
from minionflow.nodes.support.common import document_texts
from minionflow.nodes.support.context import context_of, store_of
from minionflow.serving.accounting import record_calls


def answer(state, runtime):
    context = context_of(runtime, state)
    settings, store = context.run_settings, store_of(runtime)
    client = context.model_provider.client(settings.local, "local", settings.local_max_tokens)
    text = "\\n\\n".join(document_texts(store, state["documents"]))
    call = client.text([HumanMessage(f"ONE-SHOT. {state['task']}\\n\\n{text}")])
    reply = str(call.message.content).strip() if call.message is not None else ""
    return {"usage": record_calls(store, [call], "local", "answer", 1, client.name),
            "final": FinalAnswer(answer=reply, explanation="one shot", citations=[], rounds=1, forced=False,
                                 fallback=not reply)}


def build(from_request=False):
    builder = new_builder(RunState, from_request)
    builder.add_node("answer", answer)
    add_entry(builder, "answer", from_request=from_request, protocol=PROTOCOL)
    builder.add_edge("answer", END)
    return builder


PROTOCOL = Protocol(name="one-shot", description="the local model answers in one shot", state=RunState, build=build,
                    calls=frozenset({"local"}), reads_whole="local")
'''


def one_shot(prompt: str) -> str:
    """The local model of the one-shot protocol: it reads the number from the document."""
    assert prompt.startswith("ONE-SHOT."), prompt[:200]
    return "42" if "The secret number is 42" in prompt else "I do not know."


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A folder holding the protocol's module and its distribution's metadata, as pip
    installs a package."""
    site = tmp_path / "site"
    (site / "one_shot_protocol-0.1.dist-info").mkdir(parents=True)
    (site / "one_shot_protocol.py").write_text(textwrap.dedent(PROTOCOL_MODULE))
    (site / "one_shot_protocol-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: one-shot-protocol\nVersion: 0.1\n")
    # beside it, two a broken package might name: one that does not import, one named as a built-in
    (site / "one_shot_protocol-0.1.dist-info" / "entry_points.txt").write_text(
        "[minionflow.protocols]\none-shot = one_shot_protocol:PROTOCOL\nbroken = no_such_module:PROTOCOL\n"
        "minions = one_shot_protocol:PROTOCOL\n")
    return site


@pytest.fixture
def server():
    with OpenAIServer({"mini": one_shot}) as srv:
        srv.url = srv.start()
        yield srv


def cli(*args: str, home: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=cli_env(home, PYTHONPATH=str(site)),
                          timeout=SUBPROCESS_TIMEOUT)


def test_a_protocol_of_a_package_of_its_own_runs_through_the_cli_and_eval(package, server, tmp_path):
    home = tmp_path / "home"
    listed = cli("protocols", "--json", home=home, site=package)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert list(rows) == ["minions", "minion", "remote-only", "local-only", "one-shot"]  # the broken two skipped
    assert "the protocol broken" in listed.stderr and "the protocol minions" in listed.stderr
    assert rows["minions"]["runs_code"] is True  # the built-in one, not the package's
    assert rows["one-shot"]["calls"] == ["local"] and rows["one-shot"]["runs_code"] is False
    # without the package the name is unknown, and the error lists what there is
    unknown = subprocess.run([CLI, "run", "x.txt", "-q", QUESTION, "--protocol", "one-shot"], capture_output=True,
                             text=True, env=cli_env(home), timeout=SUBPROCESS_TIMEOUT)
    assert unknown.returncode == 2
    assert "unknown protocol 'one-shot'; choose one of minions, minion, remote-only, local-only" in unknown.stderr

    doc = tmp_path / "ledger.txt"
    doc.write_text(secret_doc().text)
    local = f"mini@{server.url}"
    # a remote model that does not answer: the protocol calls none, so none is checked
    run = cli("run", str(doc), "-q", QUESTION, "--protocol", "one-shot", "--local", local,
              "--remote", "sup@http://127.0.0.1:9/v1", "--json", home=home, site=package)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["status"] == "answered" and result["answer"] == "42"
    assert [(c["role"], c["node"]) for c in result["calls"]] == [("local", "answer")]
    assert [b["model"] for b in server.requests] == ["mini"]
    shown = cli("show", result["thread_id"], "--json", home=home, site=package)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["summary"]["protocol"] == "one-shot"
    runs = cli("runs", "--json", home=home, site=package)
    assert [(t["thread_id"], t["protocol"], t["status"]) for t in json.loads(runs.stdout)] == [
        (result["thread_id"], "one-shot", "answered")]
    # the documents must fit the local model's window: its reads_whole says so
    big = tmp_path / "big.txt"
    big.write_text("The cargo manifest lists crates. " * 6000)
    refused = cli("run", str(big), "-q", QUESTION, "--protocol", "one-shot", "--local", local, home=home, site=package)
    assert refused.returncode == 2 and "one-shot needs them whole" in refused.stderr, refused.stderr[-2000:]

    (tmp_path / "suite.jsonl").write_text("\n".join(json.dumps(line) for line in [
        {"id": "secret", "documents": ["ledger.txt"], "question": QUESTION, "answers": ["42"], "match": "numeric"},
        {"id": "none", "documents": ["ledger.txt"], "question": "Who signed the ledger?", "answers": ["Ada"]},
    ]) + "\n")
    out = tmp_path / "eval"
    evaluated = cli("eval", str(tmp_path / "suite.jsonl"), "--protocols", "one-shot", "--local", local,
                    "--out", str(out), "--json", home=home, site=package)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (row,) = json.loads(evaluated.stdout)["protocols"]
    assert (row["protocol"], row["answered"], row["correct"], row["scored"]) == ("one-shot", 2, 1, 2)


def test_studio_config_serves_a_registered_protocol(package, server, tmp_path):
    """``minionflow studio-config`` lists every registered protocol; ``langgraph dev``
    serves them all (Studio's graph list is the server's assistants, and its form for a
    run's context is the settings), and a run of the package's protocol through the SDK
    answers and is checkpointed where the CLI reads."""
    from langgraph_sdk import get_sync_client
    from test_studio import serve

    home = tmp_path / "home"
    config = tmp_path / "langgraph.json"
    written = cli("studio-config", "--out", str(config), home=home, site=package)
    assert written.returncode == 0, written.stderr[-2000:]
    graphs = json.loads(config.read_text())["graphs"]
    assert graphs["one-shot"] == "minionflow.graphs.studio:one_shot" and len(graphs) == 5
    with serve(tmp_path, home, config=config, PYTHONPATH=str(package)) as url:
        client = get_sync_client(url=url)
        assistants = {a["graph_id"]: a["assistant_id"] for a in client.assistants.search()}
        assert sorted(assistants) == ["local-only", "minion", "minions", "one-shot", "remote-only"]
        # Studio's form for the run's context: the settings, and nothing a form cannot hold
        schema = client.assistants.get_schemas(assistants["one-shot"])["context_schema"]
        assert list(schema["properties"]) == ["settings"] and "protocol" in json.dumps(schema)
        thread = client.threads.create()["thread_id"]
        request = {"question": QUESTION, "texts": [{"title": "ledger.txt", "text": secret_doc().text}],
                   "settings": {"local": f"mini@{server.url}"}}
        client.runs.wait(thread, "one-shot", input=request)
        values = client.threads.get_state(thread)["values"]
    assert values["final"]["answer"] == "42" and values["settings"]["protocol"] == "one-shot"
    runs = cli("runs", "--json", home=home, site=package)
    assert [(t["thread_id"], t["protocol"]) for t in json.loads(runs.stdout)] == [(thread, "one-shot")]
