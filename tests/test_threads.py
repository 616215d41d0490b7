"""Resume, runs, show, history, fork and approval, each on a real SQLite checkpoint
database and on a real PostgreSQL server."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import CLI, SUBPROCESS_TIMEOUT, Where, cli_env, default_local, default_remote, make_where, secret_doc
from fakes import FakeProvider, PromptFake
from minionflow.contracts.errors import BadInput
from minionflow.graphs import RunContext, RunSettings
from minionflow.graphs.run import resume_minions, resume_settings, run_minions
from minionflow.graphs.threads import list_threads, show_thread, thread_history
from minionflow.sandbox import BwrapBackend
from minionflow.storage.persistence import open_persistence


def down(prompt: str) -> str:
    if "Write prepare_jobs now" in prompt:
        return default_remote(prompt)
    raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def interrupted_once(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Where, str, PromptFake]:
    """A run whose supervisor went away at aggregation: failed, resumable. Made once
    per checkpointer; each test gets its own copy (``interrupted``)."""
    home = make_where(request.param, tmp_path_factory.mktemp("home"))
    local = PromptFake(responder=default_local)
    result = run_minions([secret_doc()], "What is the secret number?",
                         RunContext(settings=RunSettings(chunk_tokens=40, max_chunk_chars=4000), sandbox=BwrapBackend(),
                                    models=FakeProvider(PromptFake(responder=down), local)),
                         thread_id="t-interrupted", checkpoint=home.location)
    assert result.status == "failed" and "APIConnectionError" in (result.error or "")
    assert result.sandbox == "bwrap"  # the unfinished round's code ran before the supervisor went away
    assert len(local.prompts) == 12
    return home, "t-interrupted", local


@pytest.fixture
def interrupted(interrupted_once: tuple[Where, str, PromptFake], tmp_path: Path) -> tuple[Where, str, PromptFake]:
    """The interrupted thread in a store of this test's own (a folder copy, or a
    database made from it as a template): no test sees what another wrote."""
    home, thread, local = interrupted_once
    return home.copy(tmp_path / "own"), thread, local


def cli(*args: str, home: Where | Path) -> subprocess.CompletedProcess[str]:
    where = home.cli_args() if isinstance(home, Where) else ["--data-dir", str(home)]
    return subprocess.run([CLI, *args, *where], capture_output=True, text=True, env=cli_env(), timeout=SUBPROCESS_TIMEOUT)


def test_an_interrupted_run_is_listed_as_unfinished(interrupted):
    home, thread, _ = interrupted
    with open_persistence(home.location) as (saver, store):
        (summary,) = list_threads(saver, store)
    assert summary.thread_id == thread and summary.status == "unfinished" and summary.next == ["aggregate"]
    assert summary.local_tokens > 0 and summary.jobs == 12
    out = cli("runs", home=home)
    assert out.returncode == 0 and thread in out.stdout and "unfinished (next: aggregate)" in out.stdout


def test_history_lists_checkpoints_newest_first(interrupted):
    home, thread, _ = interrupted
    with open_persistence(home.location) as (saver, store):
        checkpoints = thread_history(saver, store, thread)
    # history speaks in rounds: the run's checkpoints (the input, the start of round 1),
    # not the steps inside the unfinished round
    assert [(c.source, c.next, c.round) for c in checkpoints] == [("loop", ["round"], 1), ("input", ["__start__"], None)]
    assert [c.step for c in checkpoints] == sorted((c.step for c in checkpoints), reverse=True)
    out = cli("history", thread, home=home)
    assert out.returncode == 0 and checkpoints[0].checkpoint_id in out.stdout


def test_resume_redoes_no_finished_job_and_answers(interrupted):
    copy, thread, first_local = interrupted
    remote, local = PromptFake(responder=default_remote), PromptFake(responder=default_local)
    result = resume_minions(thread, checkpoint=copy.location,
                            context=RunContext(sandbox=BwrapBackend(), models=FakeProvider(remote, local)))
    assert result.status == "answered" and result.answer == "42"
    assert local.prompts == []  # the 12 finished jobs were not run again
    assert [p for p in remote.prompts if "Write prepare_jobs now" in p] == []  # nor the finished decompose
    assert result.usage is not None and result.usage.local.calls == 12
    with open_persistence(copy.location) as (saver, store):
        view = show_thread(saver, store, thread)
    assert view.summary.status == "answered" and len(view.rounds) == 1
    assert len(view.rounds[0].results) == 12 and [k["answer"] for k in view.rounds[0].kept] == ["42"]
    out = cli("show", thread, home=copy)
    assert out.returncode == 0 and "decision: provide_final_answer" in out.stdout and "Answer: 42" in out.stdout
    data = json.loads(cli("show", thread, "--json", home=copy).stdout)
    assert data["final"]["answer"] == "42" and len(data["rounds"][0]["jobs"]) == 12
    # every model call with what was sent and what came back
    calls = data["calls"]
    assert [c["node"] for c in calls if c["role"] == "remote"] == ["decompose", "aggregate"]
    assert sum(c["role"] == "local" for c in calls) == 12
    for c in calls:
        sent = c["transcript"]["messages"]
        assert [m["role"] for m in sent] == ["system", "human"] and c["transcript"]["reply"], c
    secret = [c for c in calls if c["role"] == "local" and "42, written in the ledger" in c["transcript"]["messages"][1]["content"]]
    assert len(secret) == 1
    # the remote saw the minion's quote (widened to its verified sentence), never the text of a chunk
    to_remote = " ".join(m["content"] for c in calls if c["role"] == "remote" for m in c["transcript"]["messages"])
    assert "The secret number is 42, written in the ledger." in to_remote and "talks about harbours" not in to_remote
    assert json.loads(secret[0]["transcript"]["reply"])["answer"] == "42"
    decompose = calls[0]["transcript"]
    assert "Write prepare_jobs now" in decompose["messages"][1]["content"] and "def prepare_jobs" in decompose["reply"]
    assert '"provide_final_answer"' in calls[1]["transcript"]["reply"]
    again = cli("resume", thread, home=copy)
    assert again.returncode == 2 and "already finished" in again.stderr
    with pytest.raises(BadInput, match="already finished"):
        resume_minions(thread, checkpoint=copy.location,
                       context=RunContext(sandbox=BwrapBackend(), models=FakeProvider(remote, local)))
    # refused before the models and the sandbox are checked (an endpoint down does not hide it)
    with pytest.raises(BadInput, match="already finished"):
        resume_settings(thread, copy.location, unfinished=True)
    assert resume_settings(thread, copy.location).protocol == "minions"  # a fork may start from it


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def in_a_terminal(*args: str, home: Where, columns: int) -> str:
    """The CLI on a pseudo-terminal of the given width (script(1) from util-linux)."""
    command = " ".join(shlex.quote(a) for a in [CLI, *args, *home.cli_args()])
    env = {**cli_env(), "COLUMNS": str(columns), "TERM": "xterm"}
    out = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:]
    return strip_ansi(out.stdout).replace("\r", "")


# how the CLI prints ids does not depend on where threads live: one backend (CI's time budget)
@pytest.mark.parametrize("interrupted_once", ["sqlite"], indirect=True)
def test_ids_stay_whole_in_pipes_and_narrow_terminals_and_a_prefix_is_enough(interrupted):
    home, thread, _ = interrupted
    piped = cli("runs", home=home)  # a pipe: tab-separated rows under a header, nothing cut
    header, *rows = piped.stdout.splitlines()
    assert header.split("\t")[:3] == ["thread", "protocol", "status"]
    assert [r.split("\t")[0] for r in rows] == [thread] and rows[0].split("\t")[-1] == "What is the secret number?"
    history = json.loads(cli("history", thread[:4], "--json", home=home).stdout)
    assert history[0]["next"] == ["round"] and history[0]["round"] == 1 and history[-1]["source"] == "input"
    piped_history = cli("history", thread[:4], home=home).stdout.splitlines()[1:]
    assert [line.split("\t")[0] for line in piped_history] == [c["checkpoint_id"] for c in history]
    assert [line.split("\t")[2:] for line in piped_history] == [["1", "loop", "round"], ["-", "input", "__start__"]]
    for columns in (80, 120):
        runs = in_a_terminal("runs", home=home, columns=columns)
        assert thread in runs and "What is the secret number?" in runs.replace("\n", " ").replace("  ", " ")
        checkpoints = in_a_terminal("history", thread, home=home, columns=columns)
        assert all(c["checkpoint_id"] in checkpoints for c in history)
        assert max(len(line) for line in (runs + checkpoints).splitlines()) <= columns
    shown = cli("show", thread[:3], home=home)
    assert shown.returncode == 0 and shown.stdout.startswith(f"thread {thread} ")


def test_an_ambiguous_prefix_is_refused_with_the_candidates():
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import StateGraph
    from minionflow.graphs.threads import resolve_checkpoint, resolve_thread
    from typing_extensions import TypedDict

    class S(TypedDict):
        n: int

    builder = StateGraph(S)
    builder.add_node("step", lambda s: {"n": s["n"] + 1})
    builder.set_entry_point("step")
    saver = InMemorySaver()
    graph = builder.compile(checkpointer=saver)
    for thread in ("run-a1", "run-a2", "run-b1"):
        graph.invoke({"n": 0}, {"configurable": {"thread_id": thread}})
    assert resolve_thread(saver, "run-b") == "run-b1" and resolve_thread(saver, "run-a2") == "run-a2"
    with pytest.raises(BadInput, match=r"^'run-a' starts 2 thread ids \(run-a1, run-a2\): type more of it$"):
        resolve_thread(saver, "run-a")
    with pytest.raises(BadInput, match=r"^no thread 'x' in this checkpoint database \(minionflow runs lists them\)$"):
        resolve_thread(saver, "x")
    with pytest.raises(BadInput, match="no thread ''"):
        resolve_thread(saver, "")
    ids = [c.config["configurable"]["checkpoint_id"] for c in saver.list({"configurable": {"thread_id": "run-b1"}})]
    assert resolve_checkpoint(saver, "run-b1", ids[0]) == ids[0]
    with pytest.raises(BadInput, match="starts 3 checkpoint ids"):
        resolve_checkpoint(saver, "run-b1", ids[0][:2])


def test_bad_thread_ids(interrupted):
    home, _, _ = interrupted
    for args in (["show", "nope"], ["history", "nope"], ["resume", "nope"]):
        out = cli(*args, home=home)
        assert out.returncode == 2 and "no thread 'nope'" in out.stderr, out.stderr


def test_a_request_ingest_refused_does_not_break_the_listing(interrupted):
    """A LangGraph client's run whose request was refused leaves a thread with its
    input only (no settings): runs lists the others, show says there is no run."""
    from minionflow.graphs import build_minions_graph

    copy, thread, _ = interrupted
    with open_persistence(copy.location) as (saver, store):
        graph = build_minions_graph(checkpointer=saver, store=store, from_request=True)
        with pytest.raises(BadInput, match="the question is empty"):
            graph.invoke({"question": " ", "texts": [{"text": "x"}]}, {"configurable": {"thread_id": "t-refused"}})
        assert [t.thread_id for t in list_threads(saver, store)] == [thread]
        with pytest.raises(BadInput, match="no thread 't-refused'"):
            show_thread(saver, store, "t-refused")


def test_missing_and_corrupt_sqlite_databases(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = cli("runs", home=empty)  # a pipe: the header alone, so that no reader takes the message for an id
    assert (out.returncode, out.stdout.split("\t")[0], out.stdout.count("\n"), out.stderr.strip()) == (0, "thread", 1, "no runs yet")
    out = cli("runs", "--json", home=empty)
    assert (out.returncode, out.stdout) == (0, "[]\n")
    out = cli("show", "x", home=empty)
    assert out.returncode == 2 and "no checkpoint database" in out.stderr
    assert not (empty / "checkpoints.sqlite").exists()  # nothing written
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoints.sqlite").write_bytes(b"this is not a database" * 100)
    for args in (["runs"], ["show", "x"], ["history", "x"], ["resume", "x"]):
        out = cli(*args, home=corrupt)
        assert out.returncode == 2 and "cannot be used (file is not a database)" in out.stderr, out.stderr
    assert (corrupt / "checkpoints.sqlite").read_bytes() == b"this is not a database" * 100


def test_a_locked_sqlite_database_is_a_clear_error(tmp_path):
    """Another process holds an exclusive lock (e.g. a backup): a clear error after
    SQLite's busy timeout, and the database is unchanged."""
    import sqlite3

    copy = tmp_path / "home"
    run_minions([secret_doc()], "What is the secret number?",
                RunContext(settings=RunSettings(chunk_tokens=40, max_chunk_chars=4000), sandbox=BwrapBackend(),
                           models=FakeProvider(PromptFake(responder=down), PromptFake(responder=default_local))),
                thread_id="t-interrupted", checkpoint=copy)
    db = copy / "checkpoints.sqlite"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        before = holder.execute("SELECT count(*) FROM checkpoints").fetchone()
        for args in (["runs"], ["resume", "t-interrupted"]):
            out = cli(*args, home=copy)
            assert out.returncode == 2 and "another process holds a lock on it" in out.stderr, out.stderr
        assert holder.execute("SELECT count(*) FROM checkpoints").fetchone() == before
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert cli("runs", home=copy).returncode == 0  # and usable once the lock is gone


def test_an_unreachable_postgres_url_is_a_clear_error(tmp_path):
    for url in ("postgresql://minionflow:minionflow@127.0.0.1:1/minionflow",
                "postgresql://minionflow:wrong-password@127.0.0.1:5432/minionflow"):
        for args in (["runs"], ["show", "x"], ["resume", "x"]):
            out = cli(*args, "--checkpoint", url, home=tmp_path)
            assert out.returncode == 2 and "cannot connect to PostgreSQL at" in out.stderr, out.stderr
            assert "wrong-password" not in out.stderr  # the password is masked
    doc = tmp_path / "doc.txt"
    doc.write_text(secret_doc().text)
    out = subprocess.run([CLI, "run", str(doc), "-q", "x", "--sandbox", "bwrap", "--checkpoint", "postgresql://u:p@127.0.0.1:1/db"],
                         capture_output=True, text=True, env=cli_env(tmp_path), timeout=60)
    assert out.returncode == 2 and "cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:1/db" in out.stderr, out.stderr


@pytest.mark.embedded
def test_resume_through_the_cli_with_the_embedded_supervisor(interrupted):
    """The interrupted thread's settings name the embedded model: `minionflow resume`
    starts it and finishes the aggregation over real HTTP."""
    copy, thread, _ = interrupted
    out = cli("resume", thread, "--json", home=copy)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["status"] == "answered" and result["answer"]
    remote = [c for c in result["calls"] if c["role"] == "remote"]
    assert [c["node"] for c in remote].count("aggregate") >= 1
    assert [c["model"] for c in remote if c["node"] == "aggregate"][0] == "embedded:SmolLM2-135M-Instruct"
    assert sum(1 for c in result["calls"] if c["role"] == "local") == 12  # no job ran again


def test_progress_events_reach_a_handler_and_a_run_without_one_ends_the_same(tmp_path):
    """With a handler, every job's progress event reaches it (the round is a subgraph:
    its events come through); without one, nothing is streamed (run_minions' cheaper
    path) and the run ends with the same answer, calls and usage."""
    events: list[dict[str, Any]] = []
    results = []
    for thread, handler in (("t-events", events.append), ("t-quiet", None)):
        results.append(run_minions([secret_doc()], "What is the secret number?",
                                   RunContext(settings=RunSettings(chunk_tokens=40, max_chunk_chars=4000, job_cache=False),
                                              sandbox=BwrapBackend(), on_event=handler,
                                              models=FakeProvider(PromptFake(responder=default_remote),
                                                       PromptFake(responder=default_local))),
                                   thread_id=thread, checkpoint=tmp_path))
    heard, quiet = results
    jobs = [e for e in events if e["type"] == "job"]
    assert len(jobs) == 12 and len({e["job_id"] for e in jobs}) == 12
    assert {e["type"] for e in events} >= {"job", "filter", "usage"}
    assert heard.status == quiet.status == "answered" and heard.answer == quiet.answer == "42"
    for role in ("remote", "local"):
        a, b = getattr(heard.usage, role), getattr(quiet.usage, role)
        assert (a.calls, a.prompt_tokens, a.completion_tokens) == (b.calls, b.prompt_tokens, b.completion_tokens)
    assert heard.usage.local.calls == 12 and heard.usage.remote.calls == 2
    assert heard.usage.remote_only_prompt_tokens == quiet.usage.remote_only_prompt_tokens


def test_drain_pauses_at_the_step_boundary_then_resumes(where: Where):
    from langgraph.runtime import RunControl

    control = RunControl()

    def local(prompt: str) -> str:
        control.request_drain("test")  # as a Ctrl-C would, while the jobs run
        return default_local(prompt)

    first = PromptFake(responder=local)
    paused = run_minions([secret_doc()], "What is the secret number?",
                         RunContext(settings=RunSettings(chunk_tokens=40, max_chunk_chars=4000), sandbox=BwrapBackend(),
                                    control=control, models=FakeProvider(PromptFake(responder=default_remote), first)),
                         thread_id="t-pause", checkpoint=where.location)
    assert paused.status == "paused"
    assert len(first.prompts) == 12  # the step that was running finished: every job
    with open_persistence(where.location) as (saver, store):
        (summary,) = list_threads(saver, store)
    assert summary.next == ["filter"]
    second = PromptFake(responder=default_local)
    done = resume_minions("t-pause", checkpoint=where.location, context=RunContext(sandbox=BwrapBackend(),
                                             models=FakeProvider(PromptFake(responder=default_remote), second)))
    assert done.status == "answered" and done.answer == "42" and second.prompts == []


@pytest.mark.embedded
# the embedded model through the CLI on one backend (40 s each); the pause at the step boundary
# and the resume that redoes nothing run on both in test_drain_pauses_at_the_step_boundary_then_resumes
@pytest.mark.parametrize("where", ["sqlite"], indirect=True)
def test_sigint_pauses_the_cli_and_resume_finishes(where: Where, tmp_path, spawn):
    import signal
    import time

    from pdfgen import write_pdf
    from test_cli import PAGES

    doc = write_pdf(tmp_path / "review.pdf", PAGES)
    proc = spawn([CLI, "run", str(doc), "-q", "Why was the pier closed?", "--json", "--thread", "t-sigint",
                             *where.cli_args()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(where.home))
    log = where.home / "embedded-server.log"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (log.exists() and log.read_text().count("POST") >= 2):
        time.sleep(0.2)  # the decompose call and one job have answered: the map is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    paused = json.loads(out)
    assert paused["status"] == "paused" and "pausing after the current step" in err
    resumed = cli("resume", "t-sigint", "--json", home=where)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads(resumed.stdout)
    assert result["status"] == "answered"
    jobs = [c for c in result["calls"] if c["role"] == "local"]
    assert len(jobs) == 2  # each of the two jobs ran once


def test_fork_from_round_two_with_other_settings(where: Where):
    from conftest import GOOD_CODE, final_json
    from minionflow.graphs.run import fork_minions

    def remote(prompt: str) -> str:  # never satisfied: the last round forces the answer
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        return final_json("maybe 42", "request_additional_info", feedback="more")

    def provider() -> FakeProvider:
        return FakeProvider(PromptFake(responder=remote), PromptFake(responder=default_local))

    settings = RunSettings(chunk_tokens=40, max_chunk_chars=4000, max_rounds=4)
    original = run_minions([secret_doc()], "What is the secret number?",
                           RunContext(settings=settings, sandbox=BwrapBackend(), models=provider()), thread_id="t-orig",
                           checkpoint=where.location)
    assert original.status == "answered" and original.rounds == 4 and original.forced
    with open_persistence(where.location) as (saver, store):
        before = thread_history(saver, store, "t-orig")
    round_two = next(c for c in before if c.next == ["round"] and c.round == 2)
    forked = fork_minions("t-orig", round_two.checkpoint_id, {"max_rounds": 2}, new_thread_id="t-fork",
                          checkpoint=where.location, context=RunContext(sandbox=BwrapBackend(), models=provider()))
    assert forked.status == "answered" and forked.rounds == 2 and forked.forced
    # round 1 copied (12 calls); round 2's jobs are the ones the original ran in its round 2: the job cache answers them
    assert forked.usage is not None and (forked.usage.local.calls, forked.usage.local.cache_hits) == (12, 12)
    with open_persistence(where.location) as (saver, store):
        after = thread_history(saver, store, "t-orig")
        views = {t.thread_id: t for t in list_threads(saver, store)}
        fork_view = show_thread(saver, store, "t-fork")
    assert [c.checkpoint_id for c in after] == [c.checkpoint_id for c in before]  # the original is intact
    assert views["t-orig"].rounds == 4 and views["t-fork"].rounds == 2
    assert fork_view.settings["max_rounds"] == 2
    assert [c.round for c in before] == [None, 4, 3, 2, 1, None]  # the end, the start of each round, the input
    not_a_round = before[0]  # the end of the run
    with pytest.raises(BadInput, match="not the start of a round"):
        fork_minions("t-orig", not_a_round.checkpoint_id, {}, checkpoint=where.location,
                     context=RunContext(sandbox=BwrapBackend(), models=provider()))
    with pytest.raises(BadInput, match="already exists"):
        fork_minions("t-orig", round_two.checkpoint_id, {}, new_thread_id="t-fork", checkpoint=where.location,
                     context=RunContext(sandbox=BwrapBackend(), models=provider()))
    with pytest.raises(BadInput, match="no checkpoint"):
        fork_minions("t-orig", "nope", {}, checkpoint=where.location,
                     context=RunContext(sandbox=BwrapBackend(), models=provider()))


def test_fork_bad_input_through_the_cli(interrupted):
    home, thread, _ = interrupted
    out = cli("fork", thread, "--at", "nope", home=home)
    assert out.returncode == 2 and "no checkpoint 'nope'" in out.stderr
    out = cli("fork", thread, "--at", "nope", "--remote", "gpt-9000", home=home)
    assert out.returncode == 2 and "unknown model spec 'gpt-9000'" in out.stderr
    out = cli("fork", "no-such-thread", "--at", "x", home=home)
    assert out.returncode == 2 and "no thread 'no-such-thread'" in out.stderr
    # a setting out of range, at a checkpoint that exists: one line, and no new thread
    at = cli("history", thread, home=home).stdout.splitlines()[1].split("\t")[0]
    before = cli("runs", "--json", home=home).stdout
    out = cli("fork", thread, "--at", at, "--remote-max-tokens", "10", home=home)
    assert (out.returncode, out.stdout, out.stderr.strip()) == (
        2, "", "error: --remote-max-tokens: Input should be greater than or equal to 64"), out.stderr
    assert cli("runs", "--json", home=home).stdout == before


@pytest.mark.embedded
# the embedded model's fork through the CLI on one backend (a minute each); the fork itself runs
# on both in test_fork_from_round_two_with_other_settings and through the CLI in test_cli_lifecycle
@pytest.mark.parametrize("interrupted_once", ["sqlite"], indirect=True)
def test_fork_through_the_cli_with_the_embedded_supervisor(interrupted):
    copy, thread, _ = interrupted
    # ids as a user copies them from piped output, shortened to a unique prefix
    rows = [line.split("\t") for line in cli("history", thread[:5], home=copy).stdout.splitlines()[1:]]
    at = next(row[0] for row in rows if row[4] == "round")  # the start of round 1
    short = next(at[:n] for n in range(4, len(at)) if sum(row[0].startswith(at[:n]) for row in rows) == 1)
    assert len(short) < len(at)
    out = cli("fork", thread[:5], "--at", short, "--max-rounds", "1", "--json", home=copy)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["status"] == "answered" and result["thread_id"] != thread
    with open_persistence(copy.location) as (saver, store):
        listed = {t.thread_id: t for t in list_threads(saver, store)}
    assert {t: v.status for t, v in listed.items()} == {thread: "unfinished", result["thread_id"]: "answered"}
    # round 1 ran again in the new thread: one local call per job of its round
    assert sum(1 for c in result["calls"] if c["role"] == "local") == listed[result["thread_id"]].jobs > 0


def test_approval_accept_edit_and_reject(where: Where):
    from conftest import GOOD_CODE

    remote = PromptFake(responder=default_remote)
    local = PromptFake(responder=default_local)
    models = FakeProvider(remote, local)
    settings = RunSettings(chunk_tokens=40, max_chunk_chars=4000, approve_code=True)

    def start(thread: str):
        return run_minions([secret_doc()], "What is the secret number?",
                           RunContext(settings=settings, sandbox=BwrapBackend(), models=models), thread_id=thread,
                           checkpoint=where.location)

    def resume(thread: str, approval: dict | None):
        return resume_minions(thread, checkpoint=where.location, approval=approval,
                              context=RunContext(sandbox=BwrapBackend(), models=models))

    waiting = start("t-accept")
    assert waiting.status == "awaiting_approval" and local.prompts == []  # nothing ran before the review
    assert waiting.pending_approval["code"].strip() == GOOD_CODE.split("```python\n")[1].split("```")[0].strip()
    with pytest.raises(BadInput, match="waits for a review"):
        resume("t-accept", None)
    done = resume("t-accept", {"action": "accept"})
    assert done.status == "answered" and done.answer == "42" and len(local.prompts) == 12
    with pytest.raises(BadInput, match="already finished"):
        resume("t-accept", {"action": "accept"})

    start("t-edit")
    edited = "def prepare_jobs(context, m, o):\n    return [JobManifest(chunk=context[0], task='EDITED TASK')]\n"
    done = resume("t-edit", {"action": "edit", "code": edited})
    assert done.status == "answered" and any("edited by the reviewer" in n for n in done.notes)
    assert sum("EDITED TASK" in p for p in local.prompts) == 1

    start("t-reject")
    again = resume("t-reject", {"action": "reject", "reason": "use one job per paragraph, not per page"})
    assert again.status == "awaiting_approval" and again.pending_approval["attempt"] == 2
    second_prompt = [p for p in remote.prompts if "Write prepare_jobs now" in p][-1]
    assert "rejected by the reviewer: use one job per paragraph, not per page" in second_prompt
    assert resume("t-reject", {"action": "accept"}).status == "answered"
    start("t-bad")
    with pytest.raises(BadInput, match="invalid approval"):
        resume("t-bad", {"action": "maybe"})


# through the CLI on one backend; accept, edit and reject run on both in
# test_approval_accept_edit_and_reject, and accept and edit through the CLI in test_cli_lifecycle
@pytest.mark.parametrize("where", ["postgres"], indirect=True)
def test_reject_through_the_cli(where: Where, tmp_path, openai_server):
    """--approve stops for review (exit 3, the pending code in the JSON); a reject with a
    code attempt left asks the supervisor again with the reason and stops again; a
    reject of the last attempt runs the built-in plan to an answer."""
    doc = tmp_path / "ledger.txt"
    doc.write_text(secret_doc().text)
    models = ["--remote", f"gpt-4o@{openai_server.url}", "--local", f"gpt-4o-mini@{openai_server.url}"]
    first = subprocess.run([CLI, "run", str(doc), "-q", "What is the secret number?", "--approve", "--json",
                            "--max-code-attempts", "2", "--thread", "t-review", *models, *where.cli_args()],
                           capture_output=True, text=True, env=cli_env(where.home), timeout=SUBPROCESS_TIMEOUT)
    assert first.returncode == 3, first.stderr[-2000:]
    waiting = json.loads(first.stdout)
    assert waiting["status"] == "awaiting_approval" and waiting["pending_approval"]["round"] == 1
    assert "Find the secret number" in waiting["pending_approval"]["code"]
    assert re.search(r"review it with: minionflow resume t-review( --data-dir \S+| --checkpoint \S+)* "
                     r"--accept \| --reject REASON \| --edit FILE", first.stderr), first.stderr[-2000:]
    both = cli("resume", "t-review", "--accept", "--reject", "no", home=where)
    assert both.returncode == 2 and "choose one of" in both.stderr
    again = cli("resume", "t-review", "--reject", "one job per paragraph, please", "--json", home=where)
    assert again.returncode == 3, again.stderr[-2000:]
    assert json.loads(again.stdout)["pending_approval"]["attempt"] == 2
    asks = [b["messages"][-1]["content"] for b in openai_server.requests if b["model"] == "gpt-4o"]
    assert len(asks) == 2 and "rejected by the reviewer: one job per paragraph, please" in asks[1]
    assert not any(b["model"] == "gpt-4o-mini" for b in openai_server.requests)  # nothing ran before a review
    done = cli("resume", "t-review", "--reject", "do not import modules that do not exist", "--json", home=where)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["status"] == "answered" and result["answer"] == "42"
    # the last code attempt was rejected, so the built-in plan ran
    assert any("built-in plan" in n for n in result["notes"])


def test_a_thread_of_the_old_layout_is_refused_with_its_version(where: Where):
    """A MinionS thread written by minionflow 0.1 (one flat graph, the round's fields at
    the top of the state) is listed and shown, and resume and fork refuse it in one line."""
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class Flat(TypedDict, total=False):  # the 0.1 layout, as far as resume looks
        settings: dict[str, Any]
        task: str
        documents: list[Any]
        round: int
        code_errors: list[str]
        rounds: list[Any]

    flat = StateGraph(Flat)
    flat.add_node("decompose", lambda state: {})
    flat.add_edge(START, "decompose")
    flat.add_edge("decompose", END)
    with open_persistence(where.location) as (saver, _store):
        old = flat.compile(checkpointer=saver, interrupt_before=["decompose"])
        old.invoke({"settings": RunSettings().model_dump(mode="json"), "task": "What is the secret number?",
                    "documents": [], "round": 1, "code_errors": [], "rounds": []}, {"configurable": {"thread_id": "t-old"}})
    from minionflow import __version__

    resumed = cli("resume", "t-old", home=where)
    assert resumed.returncode == 2 and resumed.stdout == ""
    assert resumed.stderr.strip().splitlines() == [
        f"error: thread t-old was written by minionflow 0.1 (state layout 1, one flat graph); minionflow {__version__} "
        "(layout 2, a subgraph per round) cannot resume it: start a new run"]
    with pytest.raises(BadInput, match="cannot resume it"):  # `run --thread t-old` takes the same path
        run_minions([secret_doc()], "What is the secret number?", RunContext(settings=RunSettings(), sandbox=BwrapBackend(),
                               models=FakeProvider(PromptFake(responder=default_remote), PromptFake(responder=default_local))),
                    thread_id="t-old", checkpoint=where.location)
    with open_persistence(where.location) as (saver, _store):
        (at,) = [c.config["configurable"]["checkpoint_id"] for c in saver.list({"configurable": {"thread_id": "t-old"}})
                 if c.metadata.get("source") == "loop"]
    forked = cli("fork", "t-old", "--at", at, home=where)
    assert forked.returncode == 2 and "cannot fork it: start a new run" in forked.stderr
    listed = cli("runs", "--json", home=where)
    assert listed.returncode == 0 and [t["thread_id"] for t in json.loads(listed.stdout)] == ["t-old"]
    assert cli("show", "t-old", home=where).returncode == 0


@pytest.mark.parametrize("backend", ["docker", "bwrap"])
def test_a_full_run_records_the_sandbox_that_ran_the_code_and_show_names_it(backend: str, tmp_path: Path):
    """The sandbox the settings name (no backend passed in) runs the supervisor's code:
    the result, the thread's round record and `show` all say which one did."""
    settings = RunSettings(sandbox=backend, chunk_tokens=40, max_chunk_chars=4000)
    result = run_minions([secret_doc()], "What is the secret number?", RunContext(settings=settings,
                                    models=FakeProvider(PromptFake(responder=default_remote), PromptFake(responder=default_local))),
                         checkpoint=tmp_path)
    assert result.status == "answered" and result.answer == "42" and result.sandbox == backend
    shown = cli("show", result.thread_id, home=tmp_path)
    assert shown.returncode == 0 and f"plan: supervisor; code ran in the {backend} sandbox" in shown.stdout, shown.stdout
    view = json.loads(cli("show", result.thread_id, "--json", home=tmp_path).stdout)
    assert [r["sandbox"] for r in view["rounds"]] == [backend]


def test_a_thread_an_earlier_version_wrote_resumes_with_its_stored_settings(tmp_path):
    """A thread keeps its settings as that version wrote them: one written before a setting
    existed lacks it, so its stored hash is not that of the settings read back now (with the
    new field's default). Its resume is still the thread's own, not "other settings"."""
    from minionflow.graphs import build_minions_graph
    from minionflow.graphs.run import run_config
    from minionflow.nodes.ingest import initial_state
    from minionflow.storage.store import put_json

    settings = RunSettings(chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap")
    with open_persistence(tmp_path) as (saver, store):
        state = initial_state(store, [secret_doc()], "What is the secret number?", settings)
        older = {k: v for k, v in state["settings"].items() if k != "max_quote_chars"}  # a field added since
        state = {**state, "settings": older, "settings_ref": put_json(store, older)}
        assert state["settings_ref"] != initial_state(store, [secret_doc()], "x", settings)["settings_ref"]
        context = RunContext(models=FakeProvider(PromptFake(responder=down), PromptFake(responder=default_local)),
                             sandbox=BwrapBackend()).with_settings(settings, state["settings_ref"])
        graph = build_minions_graph(saver, store)
        with pytest.raises(openai.APIConnectionError):
            for _ in graph.stream(state, run_config("t-older", settings), context=context, durability="sync"):
                pass
    local = PromptFake(responder=default_local)
    result = resume_minions("t-older", checkpoint=tmp_path,
                            context=RunContext(sandbox=BwrapBackend(),
                                               models=FakeProvider(PromptFake(responder=default_remote), local)))
    assert result.status == "answered" and result.answer == "42", result.error
    assert local.prompts == []  # its 12 finished jobs were not asked again
