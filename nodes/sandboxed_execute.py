"""sandboxed_execute: run the supervisor's ``prepare_jobs`` in a sandbox backend.

Errors go back to decompose with the traceback; after ``max_code_attempts`` the
round uses the built-in plan (every chunk x the task and its parts) and records that it did; a round
decompose gave the built-in plan (``settings.plan``) runs no code.
Model-written code never runs in this process (docs/architecture.md, guarantee 2). The round's
jobs (its own and the last round's failed ones that may be tried again) are stored as
one ``JobBatch`` blob; ``route_jobs``, the edge after this step (or after the steps a
graph inserts behind it), fans them out to parallel_minion_map: ``Send`` tasks of
several jobs each (``jobs_per_task``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.types import Send, interrupt
from minionflow.contracts.events import emit
from minionflow.contracts.schemas import Approval
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import JobBatch, JobInput, JobRecord, RoundState, round_number
from minionflow.nodes.support.common import carried_over, document_texts
from minionflow.nodes.support.context import RunContext, context_of, store_of
from minionflow.nodes.support.questions import question_parts
from minionflow.sandbox.base import ExecutionRequest, JobSpec
from minionflow.sandbox.chunking import chunk_by_tokens
from minionflow.storage.store import get_json, get_text, put_json, put_texts

log = logging.getLogger(__name__)

NO_JOBS_ERROR = "prepare_jobs returned an empty list; return at least one JobManifest"


def builtin_tasks(task: str, settings: RunSettings) -> list[str]:
    """The built-in plan's tasks: the user's task, then the parts of a compound question
    (nodes.support.questions), at most ``tasks_per_round`` in all."""
    return [task, *question_parts(task)][: settings.tasks_per_round]


def fallback_specs(texts: Iterable[str], task: str, settings: RunSettings) -> list[JobSpec]:
    """The built-in plan: every chunk of every document with each of ``builtin_tasks``
    (a chunk's tasks back to back: they share its prompt prefix)."""
    tasks = builtin_tasks(task, settings)
    chunks = [chunk for text in texts for chunk in chunk_by_tokens(text, settings.chunk_tokens)]
    specs = [JobSpec(chunk=chunk, task=t, chunk_id=chunk_id, task_id=i)
             for chunk_id, chunk in enumerate(chunks) for i, t in enumerate(tasks)]
    return specs[: settings.max_jobs_per_round]


def _make_jobs(specs: list[JobSpec], round_: int, settings: RunSettings, store: BaseStore) -> list[JobRecord]:
    """Jobs with their chunks stored as blobs; a chunk over ``max_chunk_chars`` is split."""
    pieces = [
        (spec, piece)
        for spec in specs
        for piece in ([spec.chunk] if len(spec.chunk) <= settings.max_chunk_chars
                      else chunk_by_tokens(spec.chunk, settings.chunk_tokens))
    ]
    refs = put_texts(store, [piece for _, piece in pieces])
    return [
        JobRecord(
            job_id=f"r{round_}-j{i:04d}", round=round_, attempt=1, chunk_ref=ref, chunk_chars=len(piece),
            chunk_id=spec.chunk_id, task_id=spec.task_id, task=spec.task, advice=spec.advice,
        )
        for i, ((spec, piece), ref) in enumerate(zip(pieces, refs, strict=True))
    ]


def chunk_major(jobs: list[JobRecord]) -> list[JobRecord]:
    """The jobs over one chunk back to back, chunks in the order they first appear, each
    chunk's jobs in their own order. The worker prompt holds the chunk before the task, so
    a server that reuses the prompt prefix of its last request (llama-cpp-python does by
    itself) reads a chunk once for all its tasks; ``benchmarks/throughput.py`` measures it."""
    first: dict[str, int] = {}
    for i, job in enumerate(jobs):
        first.setdefault(job["chunk_ref"], i)
    return sorted(jobs, key=lambda job: first[job["chunk_ref"]])


def _retried(jobs: list[JobRecord], round_: int) -> list[JobRecord]:
    return [
        JobRecord(**{**job, "job_id": f"r{round_}-retry-{job['job_id']}", "round": round_, "attempt": job["attempt"] + 1})
        for job in jobs
    ]


def _previous_round(state: RoundState, store: BaseStore) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The last round's jobs and outputs, as ``prepare_jobs`` receives them."""
    last = (state.get("rounds") or [None])[-1]
    jobs_ref, results_ref = (last["jobs_ref"], last["results_ref"]) if last else (None, None)
    # both in job id order (the order the code wrote them): the batch is stored chunk by
    # chunk (chunk_major), the results by job id, and the code may zip the two lists
    jobs = sorted(get_json(store, jobs_ref)["jobs"] if jobs_ref else [], key=lambda j: j["job_id"])
    manifests = [
        {"chunk": get_text(store, j["chunk_ref"]), "task": j["task"], "advice": j["advice"],
         "chunk_id": j["chunk_id"], "task_id": j["task_id"]}
        for j in jobs
    ]
    outputs = [
        {"explanation": r["explanation"], "citation": r["citation"], "answer": r["answer"],
         "task": r["task"], "chunk_id": r["chunk_id"], "task_id": r["task_id"]}
        for r in (get_json(store, results_ref) if results_ref else [])
    ]
    return manifests, outputs


def _review(code: str, round_: int, attempt: int) -> tuple[str, str | None]:
    """Ask a human (LangGraph ``interrupt``) to accept, edit or reject the code before
    it runs. Returns the code to run and, for a rejection, the message for the supervisor."""
    answer = Approval.model_validate(interrupt({"type": "approve_code", "round": round_, "attempt": attempt, "code": code}))
    if answer.action == "edit":
        if not answer.code or not answer.code.strip():
            raise ValueError("an edit approval needs the edited code")
        return answer.code, None
    if answer.action == "reject":
        return code, f"rejected by the reviewer: {answer.reason or 'no reason given'}"
    return code, None


# A Send task runs several jobs of the batch, one after another: LangGraph's own cost of
# a task (preparing it, saving its writes: about 1.2 ms on SQLite, more on PostgreSQL, and
# a thread each) is paid once per task instead of once per job. A job is durable the
# moment it ends all the same (parallel_minion_map keeps a record of it in the store).
# The tasks take the batch's jobs in turn (task k: jobs k, k + T, k + 2T, ... of T
# tasks), and each job waits for its own slot in the pool, which goes to the first place
# in the batch: the endpoints see the jobs in the batch's (chunk-major) order, as with a
# task per job, and the jobs in flight at once are neighbours (mostly one chunk, which a
# server with one prompt cache reuses; tasks of consecutive jobs put a different chunk in
# each slot: 520 s against 292 for 93 jobs with four in flight, benchmarks/throughput.py).
# Each endpoint slot gets at least TASKS_PER_SLOT tasks and a task at most
# MAX_JOBS_PER_TASK jobs.
TASKS_PER_SLOT = 4
MAX_JOBS_PER_TASK = 64


def jobs_per_task(jobs: int, slots: int) -> int:
    """How many jobs one parallel_minion_map task runs, for a round of ``jobs`` jobs over
    endpoints taking ``slots`` requests at once in all."""
    return max(1, min(MAX_JOBS_PER_TASK, jobs // (TASKS_PER_SLOT * max(slots, 1))))


def route_jobs(state: RoundState, runtime: Runtime[RunContext], no_jobs: str = "filter") -> list[Send] | str:
    """After the code ran: back to ``decompose`` when it failed and attempts are left,
    else ``Send`` tasks over the round's ``JobBatch`` to parallel_minion_map, of about
    ``jobs_per_task`` jobs each, taking the jobs in turn; to ``no_jobs`` if there are
    none: the filter, or the first step a graph inserts behind the jobs."""
    jobs_ref = state.get("jobs_ref")
    if jobs_ref is None:
        return "decompose"
    count = state.get("job_count") or 0
    settings = context_of(runtime, state).run_settings
    tasks = -(-count // jobs_per_task(count, sum(settings.endpoint_slots(spec) for spec in settings.local_endpoints)))
    return [Send("parallel_minion_map", JobInput(jobs_ref=jobs_ref, index=k, count=len(range(k, count, tasks)),
                                                 stride=tasks))
            for k in range(tasks)] or no_jobs


def sandboxed_execute(state: RoundState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Run the supervisor's code in the run's sandbox (after a review with
    ``approve_code``), or the built-in plan once the attempts are used up; store the
    round's jobs as one blob."""
    context = context_of(runtime, state)
    settings = context.run_settings
    store = store_of(runtime)
    round_ = round_number(state)
    errors = list(state.get("code_errors") or [])
    texts = document_texts(store, state["documents"])
    specs: list[JobSpec] = []
    code = state.get("code")
    update: dict[str, Any] = {}
    if code is not None and settings.approve_code:
        code, rejection = _review(code, round_, len(errors) + 1)
        if code != state.get("code"):
            update["code"] = code
            update["notes"] = [f"round {round_}: the supervisor's code was edited by the reviewer"]
        if rejection is not None:
            errors.append(rejection)
            code = None
    if code is not None:
        backend = context.backend()
        manifests, outputs = _previous_round(state, store)
        result = backend.execute(
            ExecutionRequest(
                code=code, context=texts, prev_job_manifests=manifests, prev_job_outputs=outputs,
                max_jobs=settings.max_jobs_per_round,
            ),
            settings.sandbox_limits,
        )
        update["sandbox"] = result.backend
        emit({"type": "execute", "round": round_, "status": result.status.value, "backend": result.backend,
              "jobs": len(result.jobs), "seconds": round(result.duration_s, 3)})
        if result.ok and result.jobs:
            specs = result.jobs
        else:
            errors.append(result.describe() if not result.ok else NO_JOBS_ERROR)
    update["code_errors"] = errors
    if specs:
        update["plan_source"] = "supervisor"
    elif state.get("plan_source") == "builtin":  # decompose did not ask for code, and said why
        specs = fallback_specs(texts, state["task"], settings)
    elif len(errors) >= settings.max_code_attempts:
        specs = fallback_specs(texts, state["task"], settings)
        update["plan_source"] = "fallback"
        note = (f"round {round_}: the supervisor's code failed {len(errors)} time(s); "
                f"used the built-in plan ({len(specs)} chunks x the task)")
        log.warning(note)
        update["notes"] = [*update.get("notes", []), note]
        emit({"type": "fallback", "round": round_, "jobs": len(specs)})
    else:
        return update  # route_jobs sends the round back to decompose
    retry = _retried(carried_over(store, state.get("rounds") or [], settings), round_)
    jobs = chunk_major(_make_jobs(specs, round_, settings, store) + retry)
    jobs_ref = put_json(store, JobBatch(settings_ref=state["settings_ref"], jobs=jobs))
    update.update(jobs_ref=jobs_ref, job_count=len(jobs))
    emit({"type": "jobs", "round": round_, "total": len(jobs)})
    return update

