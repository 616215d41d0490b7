"""Every node called directly, as a function of a small state and a ``Runtime``
holding an in-memory store: no graph, no checkpointer, no sandbox process. The
models are the prompt-derived fakes; the sandboxed_execute tests use a backend that
splits the context as the supervisor's code would say, so they test the node's
bookkeeping (attempts, fallback, retries, the job batch), not a sandbox (the
sandbox backends have their own tests)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from conftest import GOOD_CODE, default_local, final_json, secret_doc
from fakes import FakeProvider, PromptFake, bind, in_round
from langgraph.runtime import Runtime
from langgraph.store.base import GetOp
from langgraph.store.memory import InMemoryStore
from langgraph.types import Send
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import JobBatch, JobRecord, JobResult, ResultRef
from minionflow.graphs import RunContext
from minionflow.graphs.minions import MINIONS
from minionflow.nodes.aggregate import aggregate
from minionflow.nodes.decompose import NO_CODE_ERROR, decompose
from minionflow.nodes.filter import filter_outputs
from minionflow.nodes.ingest import initial_state, make_ingest
from minionflow.nodes.minion_local import minion_local
from minionflow.nodes.minion_remote import minion_remote
from minionflow.nodes.parallel_minion_map import parallel_minion_map
from minionflow.nodes.read_all import read_all_remote
from minionflow.nodes.rerank import make_rerank
from minionflow.nodes.retrieve import make_bm25_prefilter
from minionflow.nodes.sandboxed_execute import route_jobs, sandboxed_execute
from minionflow.nodes.vote import majority_vote_filter
from minionflow.sandbox.base import ExecutionRequest, ExecutionResult, JobSpec, SandboxLimits, SandboxStatus
from minionflow.storage.store import get_json, put_json

TASK = "What is the secret number?"


def runtime() -> Runtime[Any]:
    return Runtime(store=InMemoryStore())


def models(remote: Any = None, local: Any = default_local) -> FakeProvider:
    return FakeProvider(PromptFake(responder=remote or (lambda p: GOOD_CODE)), PromptFake(responder=local))


def round_input(rt: Runtime[Any], **settings: Any) -> dict[str, Any]:
    """What a round starts from: the run's state after ingest (RoundInput)."""
    settings.setdefault("local", "embedded;reply=json")
    state = initial_state(rt.store, [secret_doc(paragraphs=4, secret_at=2)], TASK, RunSettings(**settings))
    return {k: state[k] for k in ("settings", "settings_ref", "task", "documents", "rounds", "scratchpad")}


class SplittingSandbox:
    """A backend that "runs" any code as GOOD_CODE would (one job per paragraph), or
    fails when the code says ``raise``. Records what it was asked."""

    name = "splitting"

    def __init__(self) -> None:
        self.requests: list[ExecutionRequest] = []

    def check(self) -> None:
        return None

    def execute(self, request: ExecutionRequest, limits: SandboxLimits) -> ExecutionResult:
        self.requests.append(request)
        if "raise" in request.code:
            return ExecutionResult(status=SandboxStatus.ERROR, error="ValueError: bad", traceback="Traceback ...",
                                   backend=self.name)
        jobs = [JobSpec(chunk=c, task="Find the secret number", chunk_id=i, task_id=0)
                for doc in request.context for i, c in enumerate(doc.split("\n\n"))]
        return ExecutionResult(status=SandboxStatus.OK, jobs=jobs, backend=self.name)


# --- decompose -------------------------------------------------------------------------


def test_decompose_extracts_the_code_or_records_why_not():
    rt = runtime()
    state = round_input(rt)
    update = bind(decompose, models())(state, rt)
    assert "def prepare_jobs" in update["code"] and "code_errors" not in update
    (call,) = update["usage"]
    assert (call["role"], call["node"], call["round"]) == ("remote", "decompose", 1)
    remote = PromptFake(responder=lambda p: "I would rather not.")
    failed = {**state, "code_errors": ["NameError: name 'chunks' is not defined"]}
    update = bind(decompose, FakeProvider(remote, PromptFake(responder=default_local)))(failed, rt)
    assert update["code"] is None and update["code_errors"] == [failed["code_errors"][0], NO_CODE_ERROR]
    (prompt,) = remote.prompts
    assert "round 1 of at most" in prompt and "failed (attempt 1 of" in prompt
    assert "NameError: name 'chunks' is not defined" in prompt  # it saw the last error


def test_decompose_in_round_two_sees_the_records_and_the_jobs_tried_again():
    rt = runtime()
    state = round_input(rt, max_rounds=3)
    failed_job = JobRecord(job_id="r1-j0001", round=1, attempt=1, chunk_ref=put_json(rt.store, "c"), chunk_chars=1,
                           chunk_id=1, task_id=0, task="Find the crane count", advice="")
    results = [JobResult(job_id="r1-j0001", round=1, attempt=1, task_id=0, chunk_id=1, task="Find the crane count",
                         status="failed", answer=None, explanation="", citation=None, error="timeout", usage=[])]
    record = {"round": 1, "plan_source": "supervisor", "code": "x", "code_errors": [], "jobs": 1, "failed": 1,
              "abstained": 0, "kept": 0, "jobs_ref": put_json(rt.store, JobBatch(settings_ref=state["settings_ref"],
                                                                             jobs=[failed_job])),
              "results_ref": put_json(rt.store, results), "kept_ref": None,
              "decision": {"feedback": "look at the ledger"}}
    remote = PromptFake(responder=lambda p: GOOD_CODE)
    bind(decompose, FakeProvider(remote, PromptFake(responder=default_local)))({**state, "rounds": [record]}, rt)
    (prompt,) = remote.prompts
    assert "round 2 of at most 3" in prompt and "look at the ledger" in prompt and "Find the crane count" in prompt


def test_a_round_on_the_built_in_plan_asks_the_supervisor_nothing_and_says_why():
    """plan="builtin" (the embedded supervisor's default): no call, the built-in plan, a note;
    plan="auto": the supervisor's code, until it failed every attempt of a round, then the
    built-in plan; plan="code": the supervisor is asked every round."""
    rt = runtime()
    remote = PromptFake(responder=lambda p: GOOD_CODE)
    provider = FakeProvider(remote, PromptFake(responder=default_local))

    def step(state: dict[str, Any], rt: Runtime[Any]) -> dict[str, Any]:  # a run (a context) per state
        return bind(decompose, provider)(state, rt)

    embedded = round_input(rt, remote="embedded")
    assert embedded["settings"]["plan"] == "builtin"
    update = step(embedded, rt)
    assert remote.prompts == [] and "usage" not in update
    assert update["plan_source"] == "builtin" and update["code"] is None
    assert update["notes"] == ["round 1: the built-in plan; the supervisor was not asked for code "
                               "(the embedded supervisor's default, plan=builtin)"]
    jobs = bind(sandboxed_execute, sandbox=SplittingSandbox())({**embedded, **update}, rt)
    assert jobs["job_count"] == 1 and "notes" not in jobs and "sandbox" not in jobs  # no code ran
    assert get_json(rt.store, jobs["jobs_ref"])["jobs"][0]["task"] == TASK

    record = {"round": 1, "plan_source": "fallback", "code": None, "code_errors": ["x"], "jobs": 1, "failed": 0,
              "abstained": 0, "kept": 0, "jobs_ref": None, "results_ref": None, "kept_ref": None, "decision": {}}
    second = {**round_input(rt, max_rounds=3), "rounds": [record]}
    assert second["settings"]["plan"] == "auto"
    update = step(second, rt)
    assert remote.prompts == [] and update["plan_source"] == "builtin"
    assert "no code of round 1 ran: each attempt failed or was rejected" in update["notes"][0]
    assert "def prepare_jobs" in step({**second, "rounds": []}, rt)["code"]  # auto, nothing failed yet: asked
    forced = {**round_input(rt, max_rounds=3, plan="code"), "rounds": [record]}
    assert "def prepare_jobs" in step(forced, rt)["code"] and len(remote.prompts) == 2


# --- sandboxed_execute and the fan-out -----------------------------------------------------


def test_sandboxed_execute_makes_the_job_batch_and_route_jobs_fans_it_out():
    rt = runtime()
    sandbox = SplittingSandbox()
    state = {**round_input(rt), "code": GOOD_CODE, "code_errors": []}
    update = bind(sandboxed_execute, sandbox=sandbox)(state, rt)
    assert update["plan_source"] == "supervisor" and update["job_count"] == 4 and update["sandbox"] == "splitting"
    batch = get_json(rt.store, update["jobs_ref"])
    assert batch["settings_ref"] == state["settings_ref"] and [j["job_id"] for j in batch["jobs"]][:2] == ["r1-j0000", "r1-j0001"]
    assert sandbox.requests[0].context[0].startswith("Paragraph 0") and sandbox.requests[0].prev_job_manifests == []
    sends = route_jobs({**state, **update}, runtime())
    assert [(s.arg["index"], s.arg["count"]) for s in sends] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert all(isinstance(s, Send) for s in sends)
    assert {s.node for s in sends} == {"parallel_minion_map"}


class TaskMajorSandbox(SplittingSandbox):
    """Two tasks over every paragraph, written task by task as a supervisor often does."""

    def execute(self, request: ExecutionRequest, limits: SandboxLimits) -> ExecutionResult:
        chunks = request.context[0].split("\n\n")
        jobs = [JobSpec(chunk=c, task=task, chunk_id=i, task_id=t)
                for t, task in enumerate(["Find the secret number", "Find the date"]) for i, c in enumerate(chunks)]
        return ExecutionResult(status=SandboxStatus.OK, jobs=jobs, backend=self.name)


def test_the_jobs_over_one_chunk_run_back_to_back():
    rt = runtime()
    state = {**round_input(rt), "code": GOOD_CODE, "code_errors": []}
    update = bind(sandboxed_execute, sandbox=TaskMajorSandbox())(state, rt)
    jobs = get_json(rt.store, update["jobs_ref"])["jobs"]
    # written task-major (j0000-j0003 the first task); sent chunk-major, each chunk's tasks in order
    assert [(j["chunk_id"], j["task_id"]) for j in jobs] == [(c, t) for c in range(4) for t in range(2)]
    assert [j["job_id"] for j in jobs[:4]] == ["r1-j0000", "r1-j0004", "r1-j0001", "r1-j0005"]
    assert len({j["chunk_ref"] for j in jobs[0:2]}) == 1 and jobs[0]["chunk_ref"] != jobs[2]["chunk_ref"]


def test_the_next_rounds_code_gets_the_jobs_and_their_outputs_in_the_same_order():
    """The batch is stored chunk-major, the results by job id: prepare_jobs may zip
    prev_job_manifests with prev_job_outputs, so both come in the order it wrote them."""
    from minionflow.nodes.sandboxed_execute import _previous_round

    rt = runtime()
    state = {**round_input(rt), "code": GOOD_CODE, "code_errors": []}
    update = bind(sandboxed_execute, sandbox=TaskMajorSandbox())(state, rt)
    jobs = get_json(rt.store, update["jobs_ref"])["jobs"]
    results = sorted(({"job_id": j["job_id"], "task": j["task"], "task_id": j["task_id"], "chunk_id": j["chunk_id"],
                       "answer": f"{j['task_id']}/{j['chunk_id']}", "explanation": "", "citation": None} for j in jobs),
                     key=lambda r: r["job_id"])
    record = {"jobs_ref": update["jobs_ref"], "results_ref": put_json(rt.store, results)}
    manifests, outputs = _previous_round({**state, "rounds": [record]}, rt.store)
    assert [(m["task_id"], m["chunk_id"]) for m in manifests] == [(o["task_id"], o["chunk_id"]) for o in outputs]
    assert [o["answer"] for o in outputs] == [f"{t}/{c}" for t in range(2) for c in range(4)]  # as written


def test_failed_code_goes_back_to_decompose_then_the_built_in_plan():
    rt = runtime()
    execute = bind(sandboxed_execute, sandbox=SplittingSandbox())
    state = {**round_input(rt, max_code_attempts=2), "code": "raise ValueError", "code_errors": []}
    first = execute(state, rt)
    assert len(first["code_errors"]) == 1 and "ValueError: bad" in first["code_errors"][0]
    assert "jobs_ref" not in first and route_jobs({**state, **first}, runtime()) == "decompose"
    second = execute({**state, **first}, rt)
    assert second["plan_source"] == "fallback" and second["job_count"] == 1  # the 4 paragraphs fit one chunk
    assert any("used the built-in plan" in n for n in second["notes"])
    assert route_jobs({**state, **second}, runtime())[0].node == "parallel_minion_map"
    assert route_jobs({**state, "jobs_ref": "x", "job_count": 0}, runtime()) == "filter"  # no job: straight to the filter


def test_the_last_rounds_failed_jobs_are_run_again_until_their_attempts_run_out():
    rt = runtime()
    state = round_input(rt, max_job_attempts=2)
    chunk_ref = put_json(rt.store, "c")

    def job(job_id: str, attempt: int) -> JobRecord:
        return JobRecord(job_id=job_id, round=1, attempt=attempt, chunk_ref=chunk_ref, chunk_chars=1, chunk_id=0,
                         task_id=0, task="Find the crane count", advice="")

    def outcome(job_id: str, status: str) -> JobResult:
        return JobResult(job_id=job_id, round=1, attempt=1, task_id=0, chunk_id=0, task="t", status=status,  # type: ignore[typeddict-item]
                         answer=None, explanation="", citation=None, error=None, usage=[])

    jobs = [job("r1-j0000", 1), job("r1-j0001", 1), job("r1-j0002", 2)]  # the last has had its 2 attempts
    record = {"round": 1, "plan_source": "supervisor", "code": "x", "code_errors": [], "jobs": 3, "failed": 2,
              "abstained": 0, "kept": 0, "kept_ref": None, "decision": {},
              "jobs_ref": put_json(rt.store, JobBatch(settings_ref=state["settings_ref"], jobs=jobs)),
              "results_ref": put_json(rt.store, [outcome("r1-j0000", "failed"), outcome("r1-j0001", "ok"),
                                                 outcome("r1-j0002", "failed")])}
    update = bind(sandboxed_execute, sandbox=SplittingSandbox())({**state, "rounds": [record], "code": GOOD_CODE, "code_errors": []}, rt)
    batch = get_json(rt.store, update["jobs_ref"])["jobs"]
    retried = [j for j in batch if "retry" in j["job_id"]]
    assert [(j["job_id"], j["round"], j["attempt"]) for j in retried] == [("r2-retry-r1-j0000", 2, 2)]
    assert update["job_count"] == 4 + 1  # the round's own 4 jobs and the one tried again


# --- parallel_minion_map ---------------------------------------------------------------------


def test_a_minion_answers_one_job_and_its_result_is_a_blob():
    rt = runtime()
    state = round_input(rt, job_cache=False)  # the broken model below is asked job 0 again (tests/test_job_cache.py)
    update = bind(sandboxed_execute, sandbox=SplittingSandbox())({**state, "code": GOOD_CODE, "code_errors": []}, rt)
    work = bind(parallel_minion_map, models())
    refs = [work({"jobs_ref": update["jobs_ref"], "index": i}, rt)["job_results"][0] for i in range(4)]
    results = [get_json(rt.store, r["ref"]) for r in refs]
    assert [r["answer"] for r in results] == [None, None, "42", None]
    assert results[2]["grounding"]["grounded"] and results[2]["citation"] == "The secret number is 42"
    assert all(r["status"] == "ok" and r["usage"][0]["node"] == "parallel_minion_map" for r in results)
    broken = bind(parallel_minion_map, models(local=lambda p: "{not json"))({"jobs_ref": update["jobs_ref"], "index": 0}, rt)
    failed = get_json(rt.store, broken["job_results"][0]["ref"])
    assert failed["status"] == "failed" and failed["error"]  # recorded, not raised


def test_a_task_runs_its_consecutive_jobs_and_a_second_run_redoes_none():
    rt = runtime()
    update = bind(sandboxed_execute, sandbox=SplittingSandbox())({**round_input(rt, job_cache=False), "code": GOOD_CODE,
                                                         "code_errors": []}, rt)
    local = PromptFake(responder=default_local)
    work = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: GOOD_CODE), local))
    task = {"jobs_ref": update["jobs_ref"], "index": 1, "count": 3}
    refs = in_round("t", work, task, rt)["job_results"]
    assert [r["job_id"] for r in refs] == ["r1-j0001", "r1-j0002", "r1-j0003"] and len(local.prompts) == 3
    assert get_json(rt.store, refs[1]["ref"])["answer"] == "42"
    # the same task run again in that round (a resume): every job has its record, none is asked again
    assert in_round("t", work, task, rt)["job_results"] == refs and len(local.prompts) == 3
    # another thread's round (a fork) keeps records of its own: its jobs are asked
    assert [r["job_id"] for r in in_round("fork", work, task, rt)["job_results"]] == [r["job_id"] for r in refs]
    assert len(local.prompts) == 6
    # a direct call, with no thread, keeps none
    assert in_round("t", work, {**task, "index": 0, "count": 1}, rt)["job_results"][0]["job_id"] == "r1-j0000"
    work({**task, "index": 0, "count": 1}, rt)
    work({**task, "index": 0, "count": 1}, rt)
    assert len(local.prompts) == 9


def test_an_unreachable_endpoint_stops_the_task_and_its_retry_asks_only_the_jobs_not_done():
    """Jobs 0-1 answer, job 2's endpoint is down: the error is raised (for the node's
    RetryPolicy) with jobs 0-1 durable; the retry asks jobs 2 and 3 only."""
    import httpx
    import openai

    rt = runtime()
    update = bind(sandboxed_execute, sandbox=SplittingSandbox())({**round_input(rt, job_cache=False), "code": GOOD_CODE,
                                                         "code_errors": []}, rt)
    down = [True]

    def flaky(prompt: str) -> str:
        if down[0] and "The secret number is 42" in prompt:  # job 2's chunk
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
        return default_local(prompt)

    local = PromptFake(responder=flaky)
    work = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: GOOD_CODE), local))
    task = {"jobs_ref": update["jobs_ref"], "index": 0, "count": 4}
    with pytest.raises(openai.APIConnectionError):
        in_round("t", work, task, rt)
    assert len(local.prompts) == 3  # jobs 0 and 1, and job 2's failed call; job 3 not started
    down[0] = False
    refs = in_round("t", work, task, rt)["job_results"]
    assert [r["job_id"] for r in refs] == [f"r1-j000{i}" for i in range(4)]
    assert len(local.prompts) == 5 and get_json(rt.store, refs[2]["ref"])["answer"] == "42"


class CountingStore(InMemoryStore):
    """An in-memory store that counts the reads of each namespace (one per batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[tuple[str, ...]] = Counter()

    def batch(self, ops: Any) -> Any:
        ops = list(ops)
        for namespace in {op.namespace for op in ops if isinstance(op, GetOp)}:
            self.reads[namespace] += 1
        return super().batch(ops)


def test_a_task_reads_the_job_cache_once_for_all_its_jobs():
    from minionflow.serving.job_cache import CACHE_NAMESPACE

    rt = Runtime(store=CountingStore())
    update = bind(sandboxed_execute, sandbox=SplittingSandbox())({**round_input(rt), "code": GOOD_CODE, "code_errors": []}, rt)
    local = PromptFake(responder=default_local)
    work = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: GOOD_CODE), local))
    task = {"jobs_ref": update["jobs_ref"], "index": 0, "count": 4}
    first = in_round("t", work, task, rt)["job_results"]
    assert len(local.prompts) == 4 and rt.store.reads[CACHE_NAMESPACE] == 1
    # the same jobs in another thread: all four from the cache, in one read
    again = in_round("fork", work, task, rt)["job_results"]
    assert len(local.prompts) == 4 and rt.store.reads[CACHE_NAMESPACE] == 2
    answers = [get_json(rt.store, r["ref"])["answer"] for r in again]
    assert answers == [get_json(rt.store, r["ref"])["answer"] for r in first] == [None, None, "42", None]
    # a task that asks the same job twice (read ahead as missing) asks the model once; another
    # model spec (ctx) has nothing in the cache yet
    fresh = PromptFake(responder=default_local)
    twice = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: GOOD_CODE), fresh))
    update = bind(sandboxed_execute, sandbox=SplittingSandbox())({**round_input(rt, local="embedded;reply=json;ctx=4096"),
                                                         "code": GOOD_CODE, "code_errors": []}, rt)
    batch = get_json(rt.store, update["jobs_ref"])
    batch["jobs"] = [batch["jobs"][0], {**batch["jobs"][0], "job_id": "r1-j0009"}]
    refs = in_round("twice", twice, {"jobs_ref": put_json(rt.store, batch), "index": 0, "count": 2}, rt)["job_results"]
    assert [r["job_id"] for r in refs] == ["r1-j0000", "r1-j0009"] and len(fresh.prompts) == 1


def test_a_task_reads_the_chunks_of_its_jobs_left_to_run_in_one_read():
    """Each task reads its own jobs' chunks once (not the windows of other tasks' jobs),
    and a task run again after some of its jobs finished reads only the others'."""
    from minionflow.nodes.support.common import batch_from_ref
    from minionflow.storage.store import BLOB_NAMESPACE

    rt = Runtime(store=CountingStore())
    update = bind(sandboxed_execute, sandbox=SplittingSandbox())({**round_input(rt, job_cache=False), "code": GOOD_CODE,
                                                         "code_errors": []}, rt)
    jobs = get_json(rt.store, update["jobs_ref"])["jobs"]
    chunk_refs = {job["chunk_ref"] for job in jobs}
    assert len(jobs) == len(chunk_refs) == 4
    local = PromptFake(responder=default_local)
    provider = FakeProvider(PromptFake(responder=lambda p: GOOD_CODE), local)
    context = RunContext(models=provider)  # one run: it keeps the round's batch
    work = lambda inp, runtime: parallel_minion_map(inp, Runtime(store=runtime.store, context=context))  # noqa: E731
    reads: list[list[str]] = []  # the reads of chunk texts
    original = rt.store.batch

    def batch(ops: Any) -> Any:
        ops = list(ops)
        blobs = [op.key for op in ops if isinstance(op, GetOp) and op.namespace == BLOB_NAMESPACE
                 and op.key in chunk_refs]
        if blobs:
            reads.append(blobs)
        return original(ops)

    rt.store.batch = batch  # type: ignore[method-assign]
    loaded = batch_from_ref(context, rt.store, update["jobs_ref"])  # the round's batch, read once per run
    in_round("t", work, {"jobs_ref": update["jobs_ref"], "index": 1, "count": 2, "stride": 2}, rt)  # jobs 1 and 3
    assert reads == [sorted({jobs[1]["chunk_ref"], jobs[3]["chunk_ref"]})]  # one read: task 1's own chunks
    assert loaded.chunk(rt.store, 3) and reads == [sorted({jobs[1]["chunk_ref"], jobs[3]["chunk_ref"]})]
    # another thread's round runs jobs 0 and 2 after job 0 finished there: job 2's chunk only
    in_round("r", bind(parallel_minion_map, provider), {"jobs_ref": update["jobs_ref"], "index": 0, "count": 1}, rt)
    reads.clear()
    # a new run (a resume, in another process): a context of its own, which has read nothing
    in_round("r", bind(parallel_minion_map, provider), {"jobs_ref": update["jobs_ref"], "index": 0, "count": 2,
                                                         "stride": 2}, rt)
    assert reads == [[jobs[2]["chunk_ref"]]] and len(local.prompts) == 4  # 1, 3; then 0; then 2


@pytest.mark.parametrize("jobs, slots, per_task", [(4, 4, 1), (15, 1, 3), (1000, 8, 31), (1000, 1, 64), (100, 32, 1)])
def test_route_jobs_sends_tasks_that_take_the_batch_in_turn_covering_it_once(jobs, slots, per_task):
    from minionflow.nodes.parallel_minion_map import task_jobs
    from minionflow.nodes.sandboxed_execute import jobs_per_task

    assert jobs_per_task(jobs, slots) == per_task
    settings = RunSettings(local=f"embedded;slots={slots}")
    sends = route_jobs({"settings": settings.model_dump(mode="json"), "jobs_ref": "ref", "job_count": jobs}, runtime())
    assert isinstance(sends, list) and all(s.node == "parallel_minion_map" and s.arg["count"] <= per_task for s in sends)
    assert len(sends) == -(-jobs // per_task)
    places = [list(task_jobs(s.arg)) for s in sends]
    assert sorted(i for p in places for i in p) == list(range(jobs))
    assert all(p == list(range(k, jobs, len(sends))) for k, p in enumerate(places))  # task k: jobs k, k + T, ...


def test_the_tasks_of_a_round_send_its_jobs_to_one_slot_in_batch_order():
    """Four tasks of three jobs each, on threads as LangGraph runs them, share one
    endpoint slot: the model sees the jobs in the batch's order (the first to ask may
    come first; the rest wait in order)."""
    import threading

    from minionflow.storage.store import put_texts

    rt = runtime()
    settings = RunSettings(local="embedded;slots=1;reply=json", job_cache=False)
    refs = put_texts(rt.store, [f"Part {i} of the ledger lists nothing." for i in range(12)])
    jobs = [JobRecord(job_id=f"r1-j{i:04d}", round=1, attempt=1, chunk_ref=refs[i], chunk_chars=40, chunk_id=i,
                      task_id=0, task=TASK, advice="") for i in range(12)]
    jobs_ref = put_json(rt.store, JobBatch(settings_ref=put_json(rt.store, settings.model_dump(mode="json")), jobs=jobs))
    local = PromptFake(responder=default_local, delay_s=0.02)
    work = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: GOOD_CODE), local))
    sends = route_jobs({"settings": settings.model_dump(mode="json"), "jobs_ref": jobs_ref, "job_count": 12}, runtime())
    assert isinstance(sends, list) and len(sends) == 4
    threads = [threading.Thread(target=work, args=(send.arg, rt)) for send in sends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = [int(p.split("Part ")[1].split()[0]) for p in local.prompts]
    assert sorted(seen) == list(range(12)) and seen[1:] == sorted(seen[1:]), seen


# --- filter, majority vote, rerank ------------------------------------------------------------


def result(rt: Runtime[Any], job_id: str, answer: str | None, citation: str | None, chunk: str,
           task: str = "Find the secret number") -> ResultRef:
    from minionflow.nodes.support.grounding import ground

    defaults = RunSettings()
    grounding = (ground(answer, citation, chunk, task, min_citation_score=defaults.min_citation_score,
                        min_support=defaults.min_answer_support).model_dump() if answer else None)
    data = JobResult(job_id=job_id, round=1, attempt=1, task_id=0, chunk_id=int(job_id[-1]), task=task, status="ok",
                     answer=answer, explanation="read it", citation=citation, error=None, usage=[], grounding=grounding)
    return ResultRef(job_id=job_id, ref=put_json(rt.store, data))


def test_filter_keeps_grounded_answers_and_archives_every_result():
    rt = runtime()
    refs = [result(rt, "j1", "42", "The secret number is 42", "The secret number is 42, in the ledger."),
            result(rt, "j2", None, None, "Cranes."),
            result(rt, "j3", "7", "The secret number is 7", "Cranes and tides.")]  # quote not in its chunk
    update = filter_outputs({**round_input(rt), "job_results": refs}, rt)
    assert [k["answer"] for k in update["kept"]] == ["42"]
    assert (update["filter_stats"]["abstained"], update["filter_stats"]["ungrounded"], update["filter_stats"]["kept"]) == (1, 1, 1)
    assert [r["job_id"] for r in get_json(rt.store, update["results_ref"])] == ["j1", "j2", "j3"]
    assert update["job_results"].value == []  # archived: the refs leave the round's state


def test_majority_vote_filter_keeps_the_answer_most_jobs_agree_on():
    rt = runtime()
    refs = [result(rt, f"j{i}", answer, f"The secret number is {answer}", f"The secret number is {answer}.")
            for i, answer in enumerate(["42", "42", "7"])]
    update = majority_vote_filter({**round_input(rt), "job_results": refs}, rt)
    assert [k["answer"] for k in update["kept"]] == ["42"] and update["filter_stats"]["outvoted"] == 1


def test_rerank_forwards_the_best_supported_outputs():
    kept = [{"job_id": "a", "support": 0.2, "relevance": 0.1}, {"job_id": "b", "support": 0.9, "relevance": 0.5},
            {"job_id": "c", "support": None, "relevance": None}, {"job_id": "d", "support": 0.9, "relevance": 0.5}]
    update = make_rerank(2)({"kept": kept, "filter_stats": {"kept": 4, "dropped_over_cap": 1}}, runtime())
    assert [k["job_id"] for k in update["kept"]] == ["b", "d"]
    assert update["filter_stats"] == {"kept": 2, "dropped_over_cap": 3}
    with pytest.raises(ValueError):
        make_rerank(0)


# --- aggregate -----------------------------------------------------------------------------


def test_aggregate_writes_the_round_record_and_the_final_answer():
    rt = runtime()
    state = {**round_input(rt, max_rounds=2), "plan_source": "supervisor", "code": GOOD_CODE, "code_errors": [],
             "jobs_ref": None, "results_ref": None, "filter_stats": {"jobs": 4, "kept": 1},
             "kept": [{"job_id": "j1", "task": "t", "answer": "42", "citation": "The secret number is 42",
                       "explanation": "e", "support": 1.0, "relevance": 1.0}]}
    more = bind(aggregate, models(remote=lambda p: final_json("42", "request_additional_info", feedback="again",
                                                             scratchpad="42 so far")))(state, rt)
    assert "final" not in more and more["scratchpad"] == "42 so far"
    (record,) = more["rounds"]
    assert record["round"] == 1 and record["jobs"] == 4 and record["decision"]["feedback"] == "again"
    assert get_json(rt.store, record["kept_ref"])[0]["answer"] == "42"
    # the last round: the answer is forced, and the earlier record is kept before this one
    last = bind(aggregate, models(remote=lambda p: final_json("42", "request_additional_info")))(
        {**state, "rounds": more["rounds"]}, rt)
    assert [r["round"] for r in last["rounds"]] == [1, 2]
    assert last["final"]["answer"] == "42" and last["final"]["forced"] and last["final"]["rounds"] == 2


# --- ingest, retrieve, Minion, the baselines ------------------------------------------------------


def test_ingest_turns_a_plain_json_request_into_the_run_state():
    rt = runtime()
    update = make_ingest(MINIONS)({"question": TASK, "texts": [{"title": "a.txt", "text": "The number is 42."}]}, rt)
    assert update["task"] == TASK and update["rounds"] == [] and update["texts"] == []
    assert update["state_version"] == 2 and rt.store.get(("minionflow", "blobs"), update["documents"][0]["sha256"])


def test_retrieve_narrows_the_documents_to_the_best_chunks():
    rt = runtime()
    state = initial_state(rt.store, [secret_doc(paragraphs=30, secret_at=17)], TASK, RunSettings(chunk_tokens=40))
    update = make_bm25_prefilter(2)(state, rt)
    (doc,) = update["documents"]
    assert doc["title"] == "ledger.txt (retrieved)" and update["source_documents"] == state["documents"]
    from minionflow.storage.store import get_text

    assert "secret number is 42" in get_text(rt.store, doc["sha256"]) and doc["chars"] < state["documents"][0]["chars"]


def test_minion_turns_and_read_all_answer_from_the_documents():
    rt = runtime()
    state = {**initial_state(rt.store, [secret_doc(paragraphs=4, secret_at=2)], TASK,
                             RunSettings(protocol="minion", local="embedded;reply=json")), "round": 1, "conversation": []}
    import json

    remote = PromptFake(responder=lambda p: json.dumps({"decision": "request_additional_info", "message": "What number?",
                                                        "answer": None, "explanation": ""}))
    asked = bind(minion_remote, FakeProvider(remote, PromptFake(responder=default_local)))(state, rt)
    assert asked["conversation"][0]["content"] == "What number?" and "final" not in asked
    local = PromptFake(responder=lambda p: "The secret number is 42." if "secret number is 42" in p else "?")
    answered = bind(minion_local, FakeProvider(remote, local))({**state, "conversation": asked["conversation"]}, rt)
    assert answered["conversation"][0]["role"] == "local" and "42" in answered["conversation"][0]["content"]
    read = bind(read_all_remote, FakeProvider(PromptFake(responder=lambda p: "42" if "secret number is 42" in p else "?"),
                                              local))(state, rt)
    assert read["final"]["answer"] == "42" and read["usage"][0]["node"] == "read_all_remote"


def test_a_node_without_a_store_says_what_to_do():
    with pytest.raises(ValueError, match="compile the graph with one"):
        filter_outputs({"job_results": [], "task": TASK, "settings": RunSettings().model_dump(mode="json")}, Runtime())
