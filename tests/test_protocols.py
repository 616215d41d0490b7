"""The Minion chat protocol and the remote-only / local-only baselines, with
prompt-derived fakes and a real SQLite checkpointer; `--protocol`, `--graph` and
`compare` through the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from conftest import CLI, SUBPROCESS_TIMEOUT, cli_env, secret_doc
from fakes import FakeProvider, PromptFake
from minionflow.contracts.errors import BadInput
from minionflow.graphs import RunContext, RunSettings
from minionflow.graphs.run import resume_minions, run_minions
from minionflow.graphs.threads import show_thread
from minionflow.storage.documents import LoadedDocument

QUESTION = "What is the secret number?"
LEDGER = "written in the ledger"  # only in the document: the remote must never see it


def turn(decision: str, answer: str | None = None, message: str | None = None) -> str:
    return json.dumps({"decision": decision, "answer": answer, "message": message})


def supervisor(prompt: str) -> str:
    """Asks until the local model has named the number, then answers with it."""
    found = re.search(r"Local model: .*?(\d+)", prompt)
    if found:
        return turn("provide_final_answer", answer=found.group(1))
    return turn("request_additional_info", message="Which number does the document call secret?")


def local_reader(prompt: str) -> str:
    if "secret number is 42" in prompt and "Which number" in prompt:
        return 'The secret number is 42 ("The secret number is 42").'
    return "The document does not say."


def run(tmp_path: Path, remote=supervisor, local=local_reader, **settings):  # type: ignore[no-untyped-def]
    remote_fake, local_fake = PromptFake(responder=remote), PromptFake(responder=local)
    result = run_minions([secret_doc()], QUESTION,
                         RunContext(settings=RunSettings(**settings), models=FakeProvider(remote_fake, local_fake)),
                         checkpoint=tmp_path)
    return result, remote_fake, local_fake


def test_minion_asks_then_answers_and_the_remote_never_sees_the_document(tmp_path):
    result, remote, local = run(tmp_path, protocol="minion")
    assert result.status == "answered" and result.answer == "42"
    assert result.rounds == 2 and not result.forced
    assert len(remote.prompts) == 2 and len(local.prompts) == 1
    assert all(LEDGER not in p for p in remote.prompts)  # the remote saw the question and the local answers only
    assert LEDGER in local.prompts[0]  # the local model holds the whole document
    assert "Local model: The secret number is 42" in remote.prompts[1]
    assert result.usage is not None
    assert (result.usage.remote.calls, result.usage.local.calls) == (2, 1)
    assert result.usage.remote.prompt_tokens > 0 and result.usage.local.prompt_tokens > result.usage.remote.prompt_tokens // 2
    # the egress ledger: the first turn sent nothing from the document, the second the local model's reply
    said = 'The secret number is 42 ("The secret number is 42").'
    assert [(c["round"], c["document_chars"]) for c in result.calls if c["role"] == "remote"] == [(1, 0), (2, len(said))]
    assert result.usage.egress.document_chars == len(said) and result.usage.egress.document_tokens > 0
    from minionflow.storage.persistence import open_persistence

    with open_persistence(tmp_path) as (saver, store):
        view = show_thread(saver, store, result.thread_id)
    assert view.summary.protocol == "minion" and view.summary.rounds == 2
    assert [t["role"] for t in view.conversation] == ["remote", "local"]
    assert [c.node for c in view.calls] == ["minion_remote", "minion_local", "minion_remote"]


def test_minion_forces_an_answer_on_the_last_turn(tmp_path):
    def never_satisfied(prompt: str) -> str:
        return turn("request_additional_info", message="Which number does the document call secret?")

    result, remote, local = run(tmp_path, remote=never_satisfied, protocol="minion", max_rounds=3)
    assert result.status == "answered" and result.forced and result.rounds == 3
    assert result.answer == 'The secret number is 42 ("The secret number is 42").'  # the last local answer
    assert len(remote.prompts) == 3 and len(local.prompts) == 2
    assert "This is the last turn" in remote.prompts[-1] and "This is the last turn" not in remote.prompts[0]
    assert any("final answer forced" in n for n in result.notes)


def test_minion_survives_unusable_supervisor_replies(tmp_path):
    result, remote, local = run(tmp_path, remote=lambda p: "I am not JSON", protocol="minion", max_rounds=2)
    assert result.status == "answered" and result.forced
    assert len(local.prompts) == 1 and "What does the document say that helps answer" in local.prompts[0]
    assert sum("unusable" in n for n in result.notes) == 2


def test_minion_resumes_without_redoing_finished_turns(tmp_path):
    def down_at_turn_two(prompt: str) -> str:
        if "Turn 2 of" in prompt:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
        return supervisor(prompt)

    failed, _, local = run(tmp_path, remote=down_at_turn_two, protocol="minion")
    assert failed.status == "failed" and "stayed unreachable" in (failed.error or "")
    assert len(local.prompts) == 1
    remote, local2 = PromptFake(responder=supervisor), PromptFake(responder=local_reader)
    done = resume_minions(failed.thread_id, checkpoint=tmp_path, context=RunContext(models=FakeProvider(remote, local2)))
    assert done.status == "answered" and done.answer == "42"
    assert len(remote.prompts) == 1 and local2.prompts == []  # only the turn that never finished
    assert done.usage is not None and (done.usage.remote.calls, done.usage.local.calls) == (2, 1)


@pytest.mark.parametrize("protocol, role", [("remote-only", "remote"), ("local-only", "local")])
def test_baselines_read_everything_with_one_model(tmp_path, protocol, role):
    def reader(prompt: str) -> str:
        return "42" if "secret number is 42" in prompt else "unknown"

    result, remote, local = run(tmp_path, remote=reader, local=reader, protocol=protocol)
    used, unused = (remote, local) if role == "remote" else (local, remote)
    assert result.status == "answered" and result.answer == "42" and result.rounds == 1
    assert len(used.prompts) == 1 and unused.prompts == [] and LEDGER in used.prompts[0]
    totals = result.usage
    assert totals is not None
    assert getattr(totals, role).calls == 1 and getattr(totals, "local" if role == "remote" else "remote").calls == 0
    # the egress ledger: remote-only sends the whole document, local-only nothing
    sent = len(secret_doc().text) if role == "remote" else 0
    assert totals.egress.document_chars == sent and (totals.egress.document_tokens > 0) == (role == "remote")


def test_documents_too_long_for_the_local_model_are_refused_before_any_call(tmp_path):
    big = LoadedDocument(title="big.txt", text="cargo manifest entry. " * 8000, pages=1)
    for protocol in ("minion", "local-only"):
        local = PromptFake(responder=local_reader)
        with pytest.raises(BadInput, match="and the local model's context holds"):
            run_minions([big], QUESTION, RunContext(settings=RunSettings(protocol=protocol),
                                   models=FakeProvider(PromptFake(responder=supervisor), local)),
                        checkpoint=tmp_path)
        assert local.prompts == []


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=cli_env(home), timeout=SUBPROCESS_TIMEOUT)


def test_bad_protocols_and_graphs_are_clear_errors(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text(secret_doc().text)
    (tmp_path / "not_graphs.py").write_text(
        "from minionflow.graphs import build_minions_graph\n"
        "number = 3\n"
        "def wrong():\n    return 'a string'\n"
        "def old(models, sandbox):\n    return build_minions_graph()\n"
        "from langgraph.graph import StateGraph\nfrom typing_extensions import TypedDict\n"
        "class Tiny(TypedDict):\n    x: int\n"
        "tiny = StateGraph(Tiny)\n"
        "tiny.add_node('x', lambda state: {})\ntiny.add_edge('__start__', 'x')\n"
        "tiny_compiled = tiny.compile()\n"
    )
    env_home = tmp_path / "home"
    cases = [
        (["--protocol", "telepathy"], "unknown protocol 'telepathy'; choose one of minions, minion, remote-only, local-only"),
        (["--protocol", "minion", "--max-rounds", "1"], "invalid settings: the minion protocol needs max_rounds >= 2"),
        (["--graph", "nope"], "write it as module:attr"),
        (["--graph", "no_such_module:x"], "cannot import no_such_module"),
        (["--graph", "not_graphs:missing"], "has no attribute 'missing'"),
        (["--graph", "not_graphs:number"], "is a int, not a StateGraph"),
        (["--graph", "not_graphs:wrong"], "returned a str, not a StateGraph"),
        (["--graph", "not_graphs:old"], "takes no arguments (it takes models, sandbox)"),
        (["--graph", "not_graphs:tiny"], "its state lacks settings, task, documents, final, usage"),
        # a compiled graph is accepted (compiled again from its builder) and checked the same way
        (["--graph", "not_graphs:tiny_compiled"], "its state lacks settings, task, documents, final, usage"),
    ]
    for args, message in cases:
        out = subprocess.run([CLI, "run", str(doc), "-q", QUESTION, *args], capture_output=True, text=True,
                             env=cli_env(env_home, PYTHONPATH=str(tmp_path)), timeout=120)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
    assert not (env_home / "checkpoints.sqlite").exists()  # refused before anything was written
    out = cli("compare", str(doc), "-q", QUESTION, "--protocols", "minion,nope", home=env_home)
    assert out.returncode == 2 and "unknown protocol 'nope'" in out.stderr


@pytest.mark.embedded
def test_compare_runs_every_protocol_with_the_embedded_model(tmp_path):
    doc = tmp_path / "ledger.txt"
    doc.write_text(secret_doc(paragraphs=4, secret_at=2).text)
    out = cli("compare", str(doc), "-q", QUESTION, "--chunk-tokens", "40", "--sandbox", "bwrap", "--json", home=tmp_path / "h")
    rows = {r["protocol"]: r for r in json.loads(out.stdout)}
    assert list(rows) == ["minions", "minion", "remote-only", "local-only"], out.stderr[-2000:]
    for name, row in rows.items():
        assert row["status"] == "answered", (name, row)
        assert row["thread_id"] and row["elapsed_s"] > 0
    assert rows["remote-only"]["local_tokens"] == 0 and rows["remote-only"]["remote_tokens"] > 0
    assert rows["local-only"]["remote_tokens"] == 0 and rows["local-only"]["local_tokens"] > 0
    for name in ("minions", "minion"):
        assert rows[name]["remote_tokens"] > 0 and rows[name]["local_tokens"] > 0
    table = cli("runs", "--json", home=tmp_path / "h")
    protocols = sorted(t["protocol"] for t in json.loads(table.stdout))
    assert protocols == sorted(rows)


def test_a_thread_of_a_custom_graph_that_is_gone_is_still_listed(tmp_path, monkeypatch):
    from conftest import default_local, default_remote
    from minionflow.graphs.threads import list_threads

    module = tmp_path / "gone_graphs.py"
    module.write_text("from minionflow.graphs import minions_builder\n\n"
                      "def build():\n    return minions_builder()\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def down(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return default_remote(prompt)
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))

    failed = run_minions([secret_doc()], QUESTION,
                         RunContext(settings=RunSettings(graph="gone_graphs:build", chunk_tokens=40, max_chunk_chars=4000),
                                    models=FakeProvider(PromptFake(responder=down), PromptFake(responder=default_local))),
                         checkpoint=tmp_path / "home")
    assert failed.status == "failed"
    module.unlink()
    monkeypatch.delitem(sys.modules, "gone_graphs")
    from minionflow.storage.persistence import open_persistence

    with open_persistence(tmp_path / "home") as (saver, store):
        (summary,) = list_threads(saver, store)
    assert summary.protocol == "gone_graphs:build" and summary.status == "unfinished" and summary.jobs == 12
    with pytest.raises(BadInput, match="cannot import gone_graphs"):
        resume_minions(failed.thread_id, checkpoint=tmp_path / "home")


def test_minion_never_answers_before_asking(tmp_path):
    def hasty(prompt: str) -> str:
        if "(none yet" in prompt:  # the first turn: no conversation yet
            return turn("provide_final_answer", answer="a guess")
        return supervisor(prompt)

    result, remote, local = run(tmp_path, remote=hasty, protocol="minion")
    assert result.answer == "42" and len(local.prompts) == 2  # the fallback question, then the supervisor's
    assert "What does the document say that helps answer" in local.prompts[0]
    assert any("answered before asking" in n for n in result.notes)
