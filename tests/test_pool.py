"""The pool of local endpoints (serving.pool): the order jobs get slots in, where they go,
what happens when an endpoint dies, a whole run over two real OpenAI-compatible servers,
one of them killed mid-round, and, through the command line, an endpoint that does not
answer at the start (cli.common.preflight_pool): a warning, unless none answers or it is
the first of Minion or local-only, which then do not start."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
from conftest import CLI, cli_env, default_local, default_remote, final_json, secret_doc
from fakes import FakeProvider, PromptFake, bind
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore
from minionflow.contracts.settings import ModelSpec, RunSettings
from minionflow.contracts.state import JobBatch, JobRecord
from minionflow.graphs.run import run_minions
from minionflow.nodes.parallel_minion_map import parallel_minion_map
from minionflow.serving.accounting import endpoint_totals
from minionflow.serving.pool import EndpointPool
from minionflow.storage.store import get_json, put_json, put_text
from openai_server import Drop, OpenAIServer
from pydantic import ValidationError

A = ModelSpec.parse("m@http://127.0.0.1:1/v1")
B = ModelSpec.parse("m@http://127.0.0.1:2/v1")


def waiting(pool: EndpointPool, n: int) -> None:
    """Until ``n`` jobs wait for a slot (so the order they queued in is the test's)."""
    deadline = time.monotonic() + 5
    while len(pool._waiting) < n:
        assert time.monotonic() < deadline, f"{len(pool._waiting)} of {n} jobs waiting"
        time.sleep(0.005)


def run_jobs(pool: EndpointPool, jobs: list[tuple[int, str]], hold: threading.Event, taken: int) -> list[tuple[int, str, str]]:
    """Start one thread per (place, chunk) job, after ``taken`` holders of every slot; each
    records (place, chunk, endpoint) when it gets its slot and leaves at once."""
    granted: list[tuple[int, str, str]] = []
    lock = threading.Lock()

    def job(place: int, chunk: str, wait: bool) -> None:
        with pool.lease(place, chunk) as spec:
            with lock:
                granted.append((place, chunk, spec.base_url or ""))
            if wait:
                hold.wait(10)
            else:
                time.sleep(0.01)  # one at a time per slot, so the grant order is what was recorded

    threads = [threading.Thread(target=job, args=(1000 + i, f"held{i}", True)) for i in range(taken)]
    for t in threads:
        t.start()
    while len(granted) < taken:
        time.sleep(0.01)
    for n, (place, chunk) in enumerate(jobs, 1):  # arrive out of order; all wait
        threads.append(threading.Thread(target=job, args=(place, chunk, False)))
        threads[-1].start()
        waiting(pool, n)
    hold.set()
    for t in threads:
        t.join(10)
    return granted[taken:]


def test_waiting_jobs_take_the_slots_in_batch_order():
    """LangGraph starts a round's Send tasks together: the slots, not the threads' race,
    decide which job reaches the local server next (the batch is chunk-major)."""
    pool = EndpointPool([(A, 1)])
    granted = run_jobs(pool, [(7, "c"), (3, "b"), (9, "c"), (1, "a"), (5, "b")], threading.Event(), taken=1)
    assert [place for place, _, _ in granted] == [1, 3, 5, 7, 9]


def test_a_chunks_jobs_stay_on_one_endpoint_of_two():
    """Three tasks over each of two chunks on two endpoints of one slot, released one
    job at a time: a freed endpoint takes the next job over the chunk it just read, a
    chunk another endpoint is reading is left to it."""
    pool = EndpointPool([(A, 1), (B, 1)])
    granted: list[tuple[int, str]] = []
    done = {place: threading.Event() for place in (100, 101, *range(6))}
    cond = threading.Condition()

    def job(place: int, chunk: str) -> None:
        with pool.lease(place, chunk) as spec:
            with cond:
                granted.append((place, "A" if spec == A else "B"))
                cond.notify_all()
            done[place].wait(10)

    def grants(n: int) -> None:
        with cond:
            assert cond.wait_for(lambda: len(granted) >= n, 5), granted

    threads = []
    for place, chunk in [(100, "x"), (101, "y"), *((p, f"c{p // 3}") for p in (5, 2, 4, 0, 3, 1))]:
        threads.append(threading.Thread(target=job, args=(place, chunk)))
        threads[-1].start()
        grants(min(len(threads), 2))
        waiting(pool, len(threads) - 2)
    assert {p for p, _ in granted} == {100, 101}
    for place in (100, 101, 0, 3, 1, 4, 2):
        done[place].set()
        grants(len(granted) + 1 if len(granted) < 8 else 8)
    done[5].set()
    for t in threads:
        t.join(10)
    on = dict(granted)
    first = on[0]
    assert [on[p] for p in (0, 1, 2)] == [first] * 3  # c0 on one endpoint
    other = "B" if first == "A" else "A"
    assert [on[p] for p in (3, 4, 5)] == [other] * 3  # c1 on the other
    assert [p for p, _ in granted[2:]] == [0, 3, 1, 4, 2, 5]


def test_a_failed_endpoint_is_taken_out_until_a_probe_finds_it_back():
    answers = threading.Event()
    probes: list[str] = []

    def probe(spec: ModelSpec) -> bool:
        probes.append(spec.label)
        return answers.is_set()

    pool = EndpointPool([(A, 2), (B, 2)], probe=probe, probe_every_s=0.05)
    assert pool.fail(A, "ConnectError") is True  # B is up: the job may go there
    assert pool.up() == [B]
    with pool.lease(0, "c") as spec:
        assert spec == B
    assert pool.fail(B, "ConnectError") is False  # the last one standing stays: the caller raises
    assert pool.up() == [B]
    time.sleep(0.2)
    assert probes and set(probes) == {A.label} and pool.up() == [B]  # still down
    answers.set()
    deadline = time.monotonic() + 5
    while pool.up() != [A, B] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pool.up() == [A, B]


def test_one_endpoint_never_leaves_the_pool():
    pool = EndpointPool([(A, 4)])
    assert pool.fail(A, "ConnectError") is False and pool.up() == [A]


def test_pool_specs_in_settings():
    settings = RunSettings(local="embedded;servers=2,m@http://h:1/v1;slots=3")
    assert [s.label for s in settings.local_endpoints] == [
        "embedded:SmolLM2-135M-Instruct", "embedded:SmolLM2-135M-Instruct#2", "m@http://h:1/v1"]
    assert settings.local_pool[0].slots == 3 and settings.local.servers == 2
    assert RunSettings(local=["embedded", "m@http://h:1/v1"]).local_pool[0].base_url == "http://h:1/v1"
    # slots: the spec's, else one for an embedded server (it answers one at a time), else local_concurrency
    four = RunSettings(local="embedded,m@http://h:1/v1,n@http://h:1/v1;slots=2", local_concurrency=4)
    assert [four.endpoint_slots(s) for s in four.local_endpoints] == [1, 4, 2]
    with pytest.raises(ValidationError, match="named twice"):
        RunSettings(local="m@http://h:1/v1,m@http://h:1/v1")
    for bad, message in (("m@http://h:1/v1;servers=2", "starts embedded model servers"),
                         ("embedded;slots=0", "slots must be a number from 1 to 256")):
        with pytest.raises(ValidationError, match=message):
            RunSettings(local=bad)


def test_a_pool_of_two_servers_one_killed_mid_round(tmp_path):
    """Twelve jobs over two real servers; the second dies at its third request (that one
    and any in flight get no reply, then its port is closed). The run answers, every job
    has one result, the jobs the dead server lost went to the other, and the figures per
    endpoint add up to what each server answered."""
    calls = Counter[str]()
    lock = threading.Lock()

    def dying(prompt: str) -> str:
        with lock:
            calls["b"] += 1
            third = calls["b"] == 3
        if third:
            b.kill()
            raise Drop
        time.sleep(0.05)
        return default_local(prompt)

    def slow_local(prompt: str) -> str:
        time.sleep(0.05)
        return default_local(prompt)

    with OpenAIServer({"sup": default_remote}) as r, OpenAIServer({"mini": slow_local}) as a, \
            OpenAIServer({"mini": dying}) as b:
        urls = [srv.start() for srv in (r, a, b)]
        settings = RunSettings(remote=f"sup@{urls[0]};structured=json_schema",
                               local=f"mini@{urls[1]};slots=2,mini@{urls[2]};slots=2;structured=json_schema",
                               chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap")
        result = run_minions([secret_doc()], "What is the secret number?", settings, checkpoint=tmp_path)
    assert result.status == "answered" and result.answer == "42", (result.error, result.notes)
    assert b.dead and calls["b"] >= 3
    jobs = [r for r in result.calls if r["role"] == "local"]
    answered = Counter(r["job_id"] for r in jobs if r["ok"] and not r.get("moved"))
    assert len(answered) == 12 and set(answered.values()) == {1}  # every job once, none twice
    ea, eb = (next(e for e in result.usage.endpoints if e.endpoint == f"mini@{url}") for url in urls[1:])
    assert ea.jobs + eb.jobs == 12 and eb.moved >= 1 and ea.moved == 0
    assert ea.calls == a.answered == ea.jobs  # each call a server answered is one job, counted where it ran
    assert eb.calls - eb.failed_calls == b.answered == eb.jobs
    assert eb.failed_calls == eb.moved
    assert any(f"local endpoint mini@{urls[2]} failed" in note and f"went to mini@{urls[1]}" in note
               for note in result.notes), result.notes


def test_a_chunk_read_in_parts_keeps_what_the_failed_endpoint_answered():
    """A chunk too long for the window is read in parts; the first endpoint answers the
    first part and fails on the second. The job moves and reads the chunk again on the
    other endpoint, and the first endpoint's answered part stays in the job's usage,
    counted where it ran, beside the failure: it was billed."""
    sentences = [f"Sentence {i} talks about harbours, cranes and weather in general terms." for i in range(150)]
    sentences[100] = "The secret number is 42, written in the ledger."
    chunk = " ".join(sentences)
    seen = Counter[str]()

    def second_call_drops(prompt: str) -> str:
        seen["calls"] += 1
        if seen["calls"] == 2:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
        return default_local(prompt)

    store = InMemoryStore()
    # ports of their own: pools are process-wide, and this one keeps an endpoint down
    settings = RunSettings(local="mini@http://127.0.0.1:17/v1;ctx=900;slots=1,mini@http://127.0.0.1:18/v1;ctx=900;slots=1",
                           job_cache=False)
    job = JobRecord(job_id="j0", round=1, attempt=1, task_id=0, chunk_id=0, task="Find the secret number",
                    advice="", chunk_ref=put_text(store, chunk), chunk_chars=len(chunk))
    ref = put_json(store, JobBatch(settings_ref=put_json(store, settings.model_dump(mode="json")), jobs=[job]))
    local = PromptFake(responder=second_call_drops)
    node = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: final_json()), local))
    result = get_json(store, node({"jobs_ref": ref, "index": 0}, Runtime(store=store))["job_results"][0]["ref"])

    assert result["status"] == "ok" and result["answer"] == "42" and result["parts"] > 1
    usage = result["usage"]
    first, failure, *second = usage
    assert first["ok"] and first["prompt_tokens"] > 0 and not first.get("moved")  # the part the first endpoint answered
    assert failure["moved"] and not failure["ok"] and failure["model"] == first["model"]
    assert len(second) == result["parts"] and {r["model"] for r in second} == {result["endpoint"]} != {first["model"]}
    assert seen["calls"] == len(usage)  # every call made is in the usage, the dropped one as the failure
    assert first["transcript"]  # its transcript was kept with the job's other blobs
    failed_on, ran_on = (next(e for e in endpoint_totals(usage) if e.endpoint == name)
                         for name in (first["model"], result["endpoint"]))
    assert (failed_on.jobs, failed_on.moved, failed_on.calls, failed_on.failed_calls) == (0, 1, 2, 1)
    assert (ran_on.jobs, ran_on.moved, ran_on.calls) == (1, 0, result["parts"])


# --- an endpoint down at the start (cli.common.preflight_pool), through the command line ---

DOWN, DOWN_TOO = "m@http://127.0.0.1:9/v1", "m@http://127.0.0.1:19/v1"  # closed ports: nothing answers
QUESTION = "What is the secret number?"


def cli_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``minionflow run`` of the secret document (12 paragraphs) with ``args``, its own
    data folder, the sandbox bubblewrap."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    doc = tmp_path / "ledger.txt"
    doc.write_text(secret_doc().text, encoding="utf-8")
    return subprocess.run([CLI, "run", str(doc), "-q", QUESTION, "--sandbox", "bwrap", *args], capture_output=True,
                          text=True, env=cli_env(tmp_path / "home"), timeout=300)


def lines_of(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def test_an_endpoint_down_at_the_start_gets_a_warning_and_its_first_job_takes_it_out(tmp_path):
    """docs/models.md, "Several local endpoints": "one that does not answer gets a warning,
    and its first job takes it out of the pool". A MinionS pool whose first endpoint (one
    slot, so it holds one job at a time) is a closed port and whose second is a real server:
    one warning naming the closed endpoint, the run answers, the one job the closed
    endpoint was given went to the other (the note and ``usage.endpoints`` say so), and it
    got no other: the live server answered all 12 jobs."""
    with OpenAIServer({"sup": default_remote, "mini": default_local}) as srv:
        url = srv.start()
        done = cli_run(tmp_path, "--json", "--remote", f"sup@{url}", "--local", f"{DOWN};slots=1,mini@{url}")
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = lines_of(done.stderr, "warning:")
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith("warning: local model endpoint http://127.0.0.1:9/v1 is unreachable: ConnectError")
    assert warnings[0].endswith("; the other local endpoints take its jobs while it is down")
    out = json.loads(done.stdout)
    assert out["status"] == "answered" and out["answer"] == "42", out["notes"]
    by = {e["endpoint"]: e for e in out["usage"]["endpoints"]}
    assert set(by) == {DOWN, f"mini@{url}"}
    down, live = by[DOWN], by[f"mini@{url}"]
    assert (down["jobs"], down["moved"], down["calls"], down["failed_calls"]) == (0, 1, 1, 1)
    assert (live["jobs"], live["moved"], live["failed_calls"]) == (12, 0, 0)
    assert [b["model"] for b in srv.requests].count("mini") == 12  # every job answered once, on the live server
    moved = [n for n in out["notes"] if f"local endpoint {DOWN} failed" in n]
    assert len(moved) == 1 and f"its 1 job(s) went to mini@{url}" in moved[0], out["notes"]


def assert_refused(done: subprocess.CompletedProcess[str], tmp_path: Path, message: str) -> None:
    """The project's refusal of bad input: exit 2, one ``error:`` line on stderr, nothing on
    stdout, no thread written (no checkpoint database)."""
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}") and len(lines[0]) <= 220, done.stderr
    assert done.stdout == "" and not (tmp_path / "home" / "checkpoints.sqlite").exists()


def test_no_run_starts_when_no_local_endpoint_answers(tmp_path):
    """docs/models.md, "Several local endpoints": "if none answers, the run does not
    start". Both endpoints of a
    MinionS pool are closed ports: refused as bad input, with no warning first, and the
    supervisor (a live server) is never called."""
    with OpenAIServer({"sup": default_remote}) as srv:
        url = srv.start()
        done = cli_run(tmp_path, "--remote", f"sup@{url}", "--local", f"{DOWN},{DOWN_TOO}")
    assert_refused(done, tmp_path, "no local endpoint answers: local model endpoint http://127.0.0.1:9/v1 is unreachable")
    assert srv.requests == []  # no model call: the refusal came before any


def minion_chat(prompt: str) -> str:
    """A Minion supervisor: asks once, then answers."""
    if "Local model:" in prompt:
        return json.dumps({"decision": "provide_final_answer", "answer": "42", "message": None})
    return json.dumps({"decision": "request_additional_info", "answer": None, "message": QUESTION})


@pytest.mark.parametrize("protocol", ["minion", "local-only"])
def test_minion_and_local_only_do_not_start_without_their_first_endpoint(tmp_path, protocol):
    """docs/models.md, "Several local endpoints": "if the first does not answer and the
    protocol is Minion or local-only, which talk to it alone, the run does not start". With
    the first endpoint a
    closed port, the run is refused as bad input and no model is called; with the second
    one closed (the first live), the run gets the warning and answers, every local call on
    the first endpoint."""
    with OpenAIServer({"chat": minion_chat, "reader": lambda prompt: "The secret number is 42."}) as srv:
        url = srv.start()
        live = f"reader@{url}"
        first_down = cli_run(tmp_path / "first", "--protocol", protocol, "--remote", f"chat@{url}",
                             "--local", f"{DOWN},{live}")
        assert_refused(first_down, tmp_path / "first", "local model endpoint http://127.0.0.1:9/v1 is unreachable")
        assert srv.requests == []
        second_down = cli_run(tmp_path / "second", "--json", "--protocol", protocol, "--remote", f"chat@{url}",
                              "--local", f"{live},{DOWN}")
    assert second_down.returncode == 0, second_down.stderr[-3000:]
    warnings = lines_of(second_down.stderr, "warning:")
    assert len(warnings) == 1 and "endpoint http://127.0.0.1:9/v1 is unreachable" in warnings[0], second_down.stderr
    out = json.loads(second_down.stdout)
    assert out["status"] == "answered" and "42" in out["answer"], out
    local = [c for c in out["calls"] if c["role"] == "local"]
    assert local and {c["model"] for c in local} == {live}
    assert [b["model"] for b in srv.requests].count("reader") == len(local)


@pytest.mark.parametrize("protocol", ["remote-only", "local-only"])
def test_a_baseline_does_not_wait_for_the_model_it_never_calls(tmp_path, protocol):
    """Remote-only never calls a local model, and local-only never calls the remote one:
    the other role's endpoint, down, neither stops the run nor gets a warning."""
    with OpenAIServer({"reader": lambda prompt: "42"}) as srv:
        url = srv.start()
        models = (["--remote", f"reader@{url}", "--local", DOWN] if protocol == "remote-only"
                  else ["--remote", DOWN, "--local", f"reader@{url}"])
        done = cli_run(tmp_path, "--json", "--protocol", protocol, *models)
    assert done.returncode == 0, done.stderr[-3000:]
    assert lines_of(done.stderr, "warning:") == [] and lines_of(done.stderr, "error:") == []
    out = json.loads(done.stdout)
    assert out["status"] == "answered" and out["answer"] == "42", out
    assert [b["model"] for b in srv.requests] == ["reader"]  # the one model it calls, once
