"""Running a protocol's graph on documents: start, resume, fork, and the result.

Threads live where ``checkpoint`` says (see ``storage.persistence``): a folder with
SQLite files (the default, ``$MINIONFLOW_HOME`` or ``~/.local/share/minionflow``)
or a ``postgresql://`` URL.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphDrained
from langgraph.store.base import BaseStore
from langgraph.types import Command, StateSnapshot
from minionflow.contracts.errors import TRANSIENT_RETRY, BadInput, is_transient
from minionflow.contracts.schemas import Approval
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import STATE_VERSION, MinionsState, UsageRecord
from minionflow.nodes.ingest import check_fits, protocol_state
from minionflow.nodes.parallel_minion_map import finished_jobs
from minionflow.nodes.support.common import document_texts
from minionflow.nodes.support.context import RunContext
from minionflow.serving.accounting import UsageSummary, summarize
from minionflow.serving.tokens import count_ahead
from minionflow.storage.documents import LoadedDocument
from minionflow.storage.persistence import Location, describe, open_persistence, resolve_location, thread_lock
from minionflow.storage.store import get_json, get_json_many, put_json
from pydantic import BaseModel, Field, ValidationError

from minionflow import __version__

from .protocols import build_graph, protocol_for, thread_settings, thread_settings_ref

log = logging.getLogger(__name__)



class RunResult(BaseModel):
    thread_id: str
    status: Literal["answered", "failed", "paused", "awaiting_approval"]
    pending_approval: dict[str, Any] | None = None
    answer: str | None = None
    quote: str | None = None  # the passage of the documents the answer rests on, when it rests on one
    explanation: str = ""
    citations: list[str] = Field(default_factory=list)
    rounds: int = 0
    sandbox: str | None = None  # the backend that last ran the supervisor's code (None: none ran)
    forced: bool = False  # the last round forced the supervisor to answer
    fallback: bool = False  # the answer is not the supervisor's (extractive, or none could be given)
    notes: list[str] = Field(default_factory=list)
    usage: UsageSummary | None = None
    calls: list[UsageRecord] = Field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0


def is_finished(values: dict[str, Any], pending: tuple[str, ...] | list[str]) -> bool:
    """Whether a thread (its values and its next steps) has ended with a final answer."""
    return bool(values.get("final")) and not pending


def live_state(graph: Any, config: RunnableConfig) -> tuple[StateSnapshot, dict[str, Any]]:
    """A thread's snapshot and its values as they stand, with the working state of a
    MinionS round that has not finished (it lives in the round subgraph's own
    checkpoints until the round ends): that round's model calls and notes are added
    to the run's, and its state is under ``"round_state"`` (with every job that
    finished), its next steps under ``"round_next"``."""
    snapshot = graph.get_state(config, subgraphs=True)
    values = dict(snapshot.values)
    for task in snapshot.tasks:
        inner = task.state
        # the round that has not finished (a finished one's output is in the run's values)
        if task.name == "round" and task.result is None and isinstance(inner, StateSnapshot) and inner.values:
            values["usage"] = [*(values.get("usage") or []), *(inner.values.get("usage") or [])]
            values["notes"] = [*(values.get("notes") or []), *(inner.values.get("notes") or [])]
            values["round_state"] = _with_finished_jobs(graph.store, inner.config, dict(inner.values))
            values["round_next"] = list(inner.next)
    return snapshot, values


def _with_finished_jobs(store: BaseStore | None, config: RunnableConfig, values: dict[str, Any]) -> dict[str, Any]:
    """An unfinished round's state with every job that finished: those whose task ended
    are in ``job_results``, those of a task cut short (a kill) only in the records the
    jobs keep (``nodes.parallel_minion_map.finished_jobs``)."""
    configurable = config.get("configurable") or {}
    if store is None or not values.get("jobs_ref") or values.get("results_ref") or "thread_id" not in configurable:
        return values
    run = f"{configurable['thread_id']}|{configurable.get('checkpoint_ns', '')}"
    merged = {r["job_id"]: r for r in finished_jobs(store, run, values["jobs_ref"], range(values.get("job_count") or 0)).values()}
    merged.update({r["job_id"]: r for r in values.get("job_results") or []})
    values["job_results"] = list(merged.values())
    return values


def all_usage(values: dict[str, Any], store: BaseStore) -> list[UsageRecord]:
    """Every model call of a thread (``live_state``'s values): remote calls live in
    state, local calls in the job-result blobs of finished rounds and, for an
    unfinished round, of its finished jobs."""
    records: list[UsageRecord] = list(values.get("usage") or [])
    result_sets = [get_json(store, r["results_ref"]) for r in values.get("rounds") or [] if r["results_ref"]]
    current = values.get("round_state") or {}
    if current.get("results_ref"):
        result_sets.append(get_json(store, current["results_ref"]))
    else:
        result_sets.append(get_json_many(store, [ref["ref"] for ref in current.get("job_results") or []]))
    for results in result_sets:
        for result in results:
            records.extend(result["usage"])
    return records


def check_layout(saver: Any, thread_id: str, settings: RunSettings, doing: str, checkpoint_id: str | None = None) -> None:
    """Refuse a MinionS thread written before the round became a subgraph (its
    checkpoint has the round's fields at the top and no ``state_version``), read from
    the raw checkpoint: the current graph would not even see the old round's fields."""
    if protocol_for(settings).state is not MinionsState:
        return  # the other protocols' state did not change
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    if checkpoint_id:
        config["configurable"]["checkpoint_id"] = checkpoint_id
    saved = saver.get_tuple(config)
    values = saved.checkpoint["channel_values"] if saved else {}
    # a 0.1 MinionS state had the round's fields at the top (code_errors from the start)
    if "code_errors" in values and values.get("state_version") != STATE_VERSION:
        raise BadInput(f"thread {thread_id} was written by minionflow 0.1 (state layout 1, one flat graph); "
                       f"minionflow {__version__} (layout {STATE_VERSION}, a subgraph per round) cannot {doing} it: "
                       "start a new run")


MAX_THREADS = 2048


def thread_pool_size(settings: RunSettings) -> int:
    """LangGraph runs a superstep's tasks *and* the saving of each finished task's
    writes on one thread pool (``max_concurrency``), first come first served. Every
    task of a round gets a thread at once (a task runs several jobs:
    ``nodes.sandboxed_execute.jobs_per_task``; threads are made on demand, and the
    local-model bound is the slots of serving.pool), so the pool, not the order threads
    start in, decides which job goes next; the stream machinery gets a few more.
    This bound counts a task per job, which is never fewer."""
    return min(settings.max_jobs_per_round * settings.max_job_attempts + settings.local_concurrency + 8, MAX_THREADS)


# Steps besides the rounds (ingest and prelude steps) or besides a round's own (steps
# a graph inserts in it) that the recursion limit leaves room for.
SPARE_STEPS = 25


def run_config(thread_id: str, settings: RunSettings) -> RunnableConfig:
    """The recursion limit counts the steps of one graph, a round's subgraph apart from
    the run's: MinionS takes one run step per round, a round two per code attempt then
    the jobs, filter and aggregate; Minion takes two steps per turn. ``SPARE_STEPS``
    leaves room for steps a graph adds."""
    return {
        "configurable": {"thread_id": thread_id},
        "max_concurrency": thread_pool_size(settings),
        "recursion_limit": max(2 * settings.max_rounds, 2 * settings.max_code_attempts + 3) + SPARE_STEPS,
    }


def run_minions(
    documents: list[LoadedDocument],
    task: str,
    context: RunContext | RunSettings,
    *,
    thread_id: str | None = None,
    checkpoint: Location | None = None,
) -> RunResult:
    """Run (or, for an unfinished thread id, resume) a protocol on the documents:
    MinionS by default, else ``settings.protocol`` (minion, remote-only, local-only)
    or the custom graph ``settings.graph``. ``context``: the run's ``RunContext``
    (settings, models, sandbox, event handler, run control), or its settings alone.
    ``context.control.request_drain()`` (from any thread, or a signal handler) pauses the
    run at the next step boundary: the result is then ``paused`` and resumable."""
    context = context if isinstance(context, RunContext) else RunContext(settings=context)
    thread_id = thread_id or str(uuid.uuid4())
    with thread_lock(checkpoint, thread_id), open_persistence(checkpoint) as (saver, store):
        stored = thread_settings(saver, thread_id)
        if stored is not None:  # a thread that did not finish: it goes on with its own settings
            context = context.with_settings(stored, thread_settings_ref(saver, thread_id))
        settings = context.run_settings
        protocol = protocol_for(settings)
        protocol.check(settings)
        graph = build_graph(settings, saver, store)
        check_fits(protocol, settings, documents)
        count_ahead(d.text for d in documents)  # for the remote-only estimate at the end, meanwhile
        fresh = protocol_state(protocol, store, documents, task, settings)
        existing = graph.get_state({"configurable": {"thread_id": thread_id}})
        run_input: dict[str, Any] | None = fresh
        if existing.values:
            check_layout(saver, thread_id, settings, "resume")
            _check_resumable(thread_id, existing.values, existing.next, fresh)
            run_input = None
            log.info("resuming thread %s at %s", thread_id, ", ".join(existing.next))
        return _stream(graph, run_input, thread_id, context, store)


def resume_minions(
    thread_id: str,
    *,
    checkpoint: Location | None = None,
    context: RunContext | None = None,
    approval: dict[str, Any] | None = None,
) -> RunResult:
    """Continue an unfinished thread with the settings it started with; finished
    jobs and finished model calls are not redone. ``context``: the models, sandbox,
    event handler and run control to go on with (its settings are the thread's). A
    thread waiting for a review of the supervisor's code needs ``approval``:
    {"action": "accept"}, {"action": "edit", "code": ...} or {"action": "reject", "reason": ...}."""
    with thread_lock(checkpoint, thread_id), open_persistence(checkpoint) as (saver, store):
        settings = _known_thread(saver, thread_id, checkpoint)
        context = (context or RunContext()).with_settings(settings, thread_settings_ref(saver, thread_id))
        graph = build_graph(settings, saver, store)
        check_layout(saver, thread_id, settings, "resume")
        existing = graph.get_state({"configurable": {"thread_id": thread_id}})
        _refuse_finished(thread_id, existing.values, existing.next)
        run_input: Command[Any] | None = None
        if existing.interrupts:
            if approval is None:
                raise BadInput(f"thread {thread_id} waits for a review of the supervisor's code: accept, edit or reject it")
            try:
                run_input = Command(resume=Approval.model_validate(approval).model_dump())
            except ValidationError as exc:
                raise BadInput(f"invalid approval {approval!r}: the action is accept, edit (with code) or reject") from exc
        elif approval is not None:
            raise BadInput(f"thread {thread_id} is not waiting for an approval")
        log.info("resuming thread %s at %s", thread_id, ", ".join(existing.next))
        return _stream(graph, run_input, thread_id, context, store)


def fork_minions(
    thread_id: str,
    checkpoint_id: str,
    changes: dict[str, Any],
    *,
    new_thread_id: str | None = None,
    checkpoint: Location | None = None,
    context: RunContext | None = None,
) -> RunResult:
    """Start a new thread from a checkpoint of another, with changed settings, and run
    it. The original thread is not touched (time travel into a new thread). ``context``:
    the models, sandbox, event handler and run control (its settings are the fork's)."""
    new_thread_id = new_thread_id or str(uuid.uuid4())
    with thread_lock(checkpoint, new_thread_id), open_persistence(checkpoint) as (saver, store):
        original = thread_settings(saver, thread_id, checkpoint_id)
        if original is None:
            raise BadInput(f"no checkpoint {checkpoint_id!r} in thread {thread_id!r}")
        graph = build_graph(original, saver, store)
        source = graph.get_state({"configurable": {"thread_id": thread_id, "checkpoint_id": checkpoint_id}})
        check_layout(saver, thread_id, original, "fork", checkpoint_id)
        if "round" not in graph.nodes or tuple(source.next) != ("round",):
            raise BadInput(
                f"checkpoint {checkpoint_id} is not the start of a round; fork a MinionS thread from a checkpoint "
                "whose next step is a round (minionflow history lists them)"
            )
        settings = RunSettings.model_validate({**source.values["settings"], **changes})
        context = (context or RunContext()).with_settings(settings)
        target: RunnableConfig = {"configurable": {"thread_id": new_thread_id}}
        if graph.get_state(target).values:
            raise BadInput(f"thread {new_thread_id} already exists")
        values = dict(source.values)
        values["settings"] = settings.model_dump(mode="json")
        values["settings_ref"] = put_json(store, values["settings"])
        # written as the round node: the new thread's next step is the round (its edge
        # goes on to another round while there is no final answer)
        graph.update_state(target, values, as_node="round")
        log.info("forked %s at %s into %s (%s)", thread_id, checkpoint_id, new_thread_id, changes)
        return _stream(graph, None, new_thread_id, context, store)


def finished_result(thread_id: str, checkpoint: Location | None = None) -> tuple[bool, RunResult | None]:
    """Whether the thread exists, and its result if it finished, read from its
    checkpoint without running anything."""
    with open_persistence(checkpoint) as (saver, store):
        settings = thread_settings(saver, thread_id)
        if settings is None:
            return False, None
        graph = build_graph(settings, saver, store)
        snapshot, values = live_state(graph, {"configurable": {"thread_id": thread_id}})
        if not is_finished(values, snapshot.next):
            return True, None
        return True, _result(thread_id, values, store, None, 0.0)


def resume_settings(thread_id: str, checkpoint: Location | None = None, *, unfinished: bool = False) -> RunSettings:
    """The settings an existing thread started with, for the checks before a resume or a
    fork (models, sandbox). ``unfinished``: a thread that already finished is refused
    (nothing to resume), before those checks, so an endpoint that is down does not hide it."""
    with open_persistence(checkpoint) as (saver, store):
        settings = _known_thread(saver, thread_id, checkpoint)
        if unfinished:
            graph = build_graph(settings, saver, store)
            snapshot, values = live_state(graph, {"configurable": {"thread_id": thread_id}})
            _refuse_finished(thread_id, values, snapshot.next)
        return settings


def _refuse_finished(thread_id: str, values: dict[str, Any], pending: tuple[str, ...]) -> None:
    if is_finished(values, pending):
        raise BadInput(f"thread {thread_id} already finished; nothing to resume")


def _known_thread(saver: Any, thread_id: str, checkpoint: Location | None) -> RunSettings:
    settings = thread_settings(saver, thread_id)
    if settings is None:
        raise BadInput(f"no thread {thread_id!r} in {describe(resolve_location(checkpoint))}")
    return settings


def _stream(graph: Any, run_input: dict[str, Any] | Command[Any] | None, thread_id: str, context: RunContext,
            store: BaseStore) -> RunResult:
    settings = context.run_settings
    config = run_config(thread_id, settings)
    started = time.monotonic()
    error = None
    paused = False
    try:
        if context.on_event is None:
            # No one listens: no custom stream, so a node's progress event is a no-op
            # (LangGraph's writer does nothing) and does not wake this thread, once a job
            # (0.07 ms a job at 1,000 jobs, benchmarks/overhead.py)
            for _ in graph.stream(run_input, config, context=context, stream_mode="updates", durability="sync",
                                  control=context.control):
                pass
        else:
            # subgraphs: a MinionS round is a subgraph, and its steps emit the progress events
            for _namespace, event in graph.stream(run_input, config, context=context, stream_mode="custom",
                                                  durability="sync", control=context.control, subgraphs=True):
                context.on_event(event)
    except GraphDrained as exc:
        paused = True
        log.info("run %s paused (%s)", thread_id, exc.reason)
    except Exception as exc:  # noqa: BLE001 - reported as a failed (resumable) run
        log.exception("run %s failed", thread_id)
        error = failure_message(exc, thread_id)
    snapshot, values = live_state(graph, config)
    result = _result(thread_id, values, store, error, time.monotonic() - started)
    if snapshot.interrupts and error is None:
        result = result.model_copy(update={"status": "awaiting_approval", "error": None,
                                           "pending_approval": snapshot.interrupts[0].value})
    elif paused and result.status != "answered":
        result = result.model_copy(update={"status": "paused", "error": "paused at a step boundary"})
    return result


def failure_message(exc: Exception, thread_id: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if is_transient(exc):
        return (f"a model endpoint stayed unreachable after {TRANSIENT_RETRY.max_attempts} attempts ({text}); "
                f"finished work is saved: when it is back, run `minionflow resume {thread_id}`")
    return text


def _check_resumable(thread_id: str, values: dict[str, Any], pending: tuple[str, ...], fresh: dict[str, Any]) -> None:
    if is_finished(values, pending):
        raise BadInput(f"thread {thread_id} already finished; start a new thread to ask again")
    given = values.get("source_documents") or values.get("documents", [])
    same_docs = [d["sha256"] for d in given] == [d["sha256"] for d in fresh["documents"]]
    if values.get("task") != fresh["task"] or not same_docs:
        raise BadInput(f"thread {thread_id} belongs to another question or other documents")


def thread_usage(values: dict[str, Any], store: BaseStore) -> tuple[list[UsageRecord], UsageSummary]:
    """Every model call of a thread and its usage summary (with the remote-only estimate)."""
    settings = RunSettings.model_validate(values["settings"])
    records = all_usage(values, store)
    # the estimate sends everything: the documents as given, before any step narrowed them
    texts = document_texts(store, values.get("source_documents") or values.get("documents") or [])
    answer = (values.get("final") or {}).get("answer", "")
    return records, summarize(records, settings.prices, values.get("task", ""), texts, answer)


def rounds_done(values: dict[str, Any]) -> int:
    """Finished rounds: MinionS records each; the other protocols count turns."""
    return len(values.get("rounds") or []) or (values.get("final") or {}).get("rounds") or max(values.get("round", 1) - 1, 0)


def last_sandbox(values: dict[str, Any]) -> str | None:
    """The backend that last ran the supervisor's code: the unfinished round's if its
    code ran (a run that failed or paused after sandboxed_execute), else the last
    finished round's; None if no code ran."""
    current = (values.get("round_state") or {}).get("sandbox")
    return current or next((r["sandbox"] for r in reversed(values.get("rounds") or []) if r.get("sandbox")), None)


def _result(thread_id: str, values: dict[str, Any], store: BaseStore, error: str | None, elapsed: float) -> RunResult:
    final = values.get("final")
    records, usage = thread_usage(values, store)
    common: dict[str, Any] = {
        "thread_id": thread_id, "notes": list(values.get("notes") or []), "usage": usage,
        "calls": records, "elapsed_s": round(elapsed, 3), "rounds": rounds_done(values),
        "sandbox": last_sandbox(values),
    }
    if final and error is None:
        return RunResult(
            status="answered", answer=final["answer"], quote=final.get("quote"), explanation=final["explanation"],
            citations=final["citations"], forced=final["forced"], fallback=final["fallback"], **common,
        )
    return RunResult(status="failed", error=error or "the run stopped before an answer", **common)
