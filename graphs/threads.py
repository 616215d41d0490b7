"""Inspecting threads in a checkpoint database: list runs, show a run round by
round, list a thread's checkpoints. Read-only: nothing here calls a model."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START
from langgraph.store.base import BaseStore
from minionflow.contracts.errors import BadInput
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import RunState, UsageRecord
from minionflow.serving.accounting import Transcript, UsageSummary, load_transcripts, role_totals
from minionflow.storage.store import get_json
from pydantic import BaseModel

from .entry import new_builder
from .protocols import build_graph, thread_settings
from .run import all_usage, is_finished, live_state, rounds_done, thread_usage

log = logging.getLogger(__name__)

Status = Literal["answered", "unfinished"]


class ThreadSummary(BaseModel):
    thread_id: str
    protocol: str
    status: Status
    question: str
    rounds: int
    jobs: int
    remote_tokens: int
    local_tokens: int
    cost_usd: float
    updated: datetime
    next: list[str]


class RoundView(BaseModel):
    round: int
    plan_source: str
    sandbox: str | None = None  # the backend that ran the supervisor's code (None: no code ran)
    code: str | None
    code_errors: list[str]
    jobs: list[dict[str, Any]]
    results: list[dict[str, Any]]
    kept: list[dict[str, Any]]
    decision: dict[str, Any]

    @property
    def ungrounded(self) -> list[dict[str, Any]]:
        """Outputs the grounding check held back: kept in the thread, never forwarded."""
        return [x for x in self.results if x.get("status") == "ok" and x.get("grounding")
                and not x["grounding"].get("grounded", True)]


class CallView(BaseModel):
    """One model call with its usage and its transcript (what was sent, what came back)."""

    role: str
    node: str
    round: int
    model: str
    ok: bool
    error: str | None = None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    latency_s: float
    cache_hit: bool = False  # answered from the job cache: no request was sent
    job_id: str | None = None  # a minion job's call
    moved: bool = False  # the endpoint failed and the job went to another (serving.pool)
    document_chars: int | None = None  # a remote call: what of its prompt came from the documents
    document_tokens: int | None = None
    transcript: Transcript | None


class ThreadView(BaseModel):
    summary: ThreadSummary
    settings: dict[str, Any]
    documents: list[dict[str, Any]]
    rounds: list[RoundView]
    final: dict[str, Any] | None
    notes: list[str]
    usage: UsageSummary
    calls: list[CallView]
    conversation: list[dict[str, Any]]  # Minion threads: the supervisor's questions and the local answers


class CheckpointView(BaseModel):
    checkpoint_id: str
    step: int
    source: str
    next: list[str]
    round: int | None
    created: datetime


def _thread_ids(saver: BaseCheckpointSaver[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for item in saver.list(None):
        seen.setdefault(item.config["configurable"]["thread_id"], None)
    return list(seen)


def _unique(typed: str, ids: list[str], what: str, listed_by: str) -> str:
    if typed in ids:
        return typed
    matches = sorted({i for i in ids if typed and i.startswith(typed)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BadInput(f"no {what} {typed!r} in this checkpoint database ({listed_by} lists them)")
    shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
    raise BadInput(f"{typed!r} starts {len(matches)} {what} ids ({shown}): type more of it")


def resolve_thread(saver: BaseCheckpointSaver[Any], typed: str) -> str:
    """The thread id a user typed: whole, or the start of exactly one thread's id."""
    return _unique(typed, _thread_ids(saver), "thread", "minionflow runs")


def resolve_checkpoint(saver: BaseCheckpointSaver[Any], thread_id: str, typed: str) -> str:
    """A checkpoint id of the thread: whole, or the start of exactly one of its ids."""
    ids = [item.config["configurable"]["checkpoint_id"]
           for item in saver.list({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})]
    return _unique(typed, ids, "checkpoint", f"minionflow history {thread_id}")


def _summary(thread_id: str, values: dict[str, Any], nxt: tuple[str, ...], created: str | None,
             records: list[UsageRecord]) -> ThreadSummary:
    """``values`` as ``live_state`` gives them; ``next`` is the steps an unfinished
    round goes on with, else the run's."""
    settings = RunSettings.model_validate(values["settings"])
    current = values.get("round_state") or {}
    totals = role_totals(records, settings.prices)
    return ThreadSummary(
        thread_id=thread_id,
        protocol=settings.graph or settings.protocol,
        status="answered" if is_finished(values, nxt) else "unfinished",
        question=values.get("task", ""),
        rounds=rounds_done(values),
        jobs=sum(r["jobs"] for r in values.get("rounds") or []) + (current.get("job_count") or 0),
        remote_tokens=totals["remote"].prompt_tokens + totals["remote"].completion_tokens,
        local_tokens=totals["local"].prompt_tokens + totals["local"].completion_tokens,
        cost_usd=totals["remote"].cost_usd + totals["local"].cost_usd,
        updated=datetime.fromisoformat(created) if created else datetime.now(UTC),
        next=list(values.get("round_next") or nxt),
    )


def _settings(saver: BaseCheckpointSaver[Any], thread_id: str) -> RunSettings:
    settings = thread_settings(saver, thread_id)
    if settings is None:
        raise BadInput(f"no thread {thread_id!r} in this checkpoint database")
    return settings


def _graph(saver: BaseCheckpointSaver[Any], store: BaseStore, thread_id: str, settings: RunSettings,
           built: dict[str, Any] | None = None) -> Any:
    """The graph a thread ran with (read-only use: no model is called). ``built``
    keeps the graphs compiled so far, by protocol or custom graph (5 ms each)."""
    built = {} if built is None else built
    key = settings.graph or settings.protocol
    if key not in built:
        try:
            built[key] = build_graph(settings, checkpointer=saver, store=store)
        except BadInput as exc:
            if settings.graph:
                # a custom graph that cannot be imported here: its state is MinionsState, which the
                # default graph reads as well (to resume it, the module must be importable again)
                log.warning("thread %s: %s; reading it with the default MinionS graph", thread_id, exc)
                built[key] = build_graph(settings.model_copy(update={"graph": None}), checkpointer=saver, store=store)
            else:
                # a protocol no package registers here (uninstalled, or a database shared with another
                # installation): its state is read with the fields every run has
                log.warning("thread %s: %s; reading it as a run of an unknown protocol", thread_id, exc)
                reader = new_builder(RunState, from_request=False)
                reader.add_node("unknown", lambda state: {})
                reader.add_edge(START, "unknown")
                built[key] = reader.compile(checkpointer=saver, store=store, name=settings.protocol)
    return built[key]


def list_threads(saver: BaseCheckpointSaver[Any], store: BaseStore) -> list[ThreadSummary]:
    out = []
    built: dict[str, Any] = {}
    for thread_id in _thread_ids(saver):
        settings = thread_settings(saver, thread_id)
        if settings is None:  # no run state: e.g. a LangGraph client's request that ingest refused
            continue
        graph = _graph(saver, store, thread_id, settings, built)
        snapshot, values = live_state(graph, {"configurable": {"thread_id": thread_id}})
        records = all_usage(values, store)
        out.append(_summary(thread_id, values, snapshot.next, snapshot.created_at, records))
    return sorted(out, key=lambda t: t.updated, reverse=True)


def show_thread(saver: BaseCheckpointSaver[Any], store: BaseStore, thread_id: str) -> ThreadView:
    """Everything a thread holds (``minionflow show``): its summary and settings, each round
    (code, jobs, every result with its grounding, what was forwarded), the final answer, the
    notes, the usage and every model call; read from its checkpoints, nothing is run."""
    graph = _graph(saver, store, thread_id, _settings(saver, thread_id))
    snapshot, values = live_state(graph, {"configurable": {"thread_id": thread_id}})
    rounds = []
    for r in values.get("rounds") or []:
        rounds.append(
            RoundView(
                round=r["round"], plan_source=r["plan_source"], sandbox=r.get("sandbox"), code=r["code"], code_errors=r["code_errors"],
                jobs=get_json(store, r["jobs_ref"])["jobs"] if r["jobs_ref"] else [],
                results=get_json(store, r["results_ref"]) if r["results_ref"] else [],
                kept=get_json(store, r["kept_ref"]) if r["kept_ref"] else [],
                decision=r["decision"],
            )
        )
    final = values.get("final")
    records, usage = thread_usage(values, store)
    return ThreadView(
        summary=_summary(thread_id, values, snapshot.next, snapshot.created_at, records),
        settings=values["settings"], documents=list(values.get("documents") or []), rounds=rounds,
        final=final, notes=list(values.get("notes") or []), usage=usage, calls=_calls(store, records),
        conversation=list(values.get("conversation") or []),
    )


class GraphView(BaseModel):
    """The graph a thread ran with, its subgraphs opened (LangGraph's ``get_graph(xray)``):
    node ids (a round's steps as ``round:decompose``) and edges (source, target, conditional)."""

    nodes: list[str]
    edges: list[tuple[str, str, bool]]


def thread_graph(saver: BaseCheckpointSaver[Any], store: BaseStore, thread_id: str) -> GraphView:
    drawn = _graph(saver, store, thread_id, _settings(saver, thread_id)).get_graph(xray=True)
    return GraphView(nodes=list(drawn.nodes), edges=[(e.source, e.target, bool(e.conditional)) for e in drawn.edges])


def _calls(store: BaseStore, records: list[UsageRecord]) -> list[CallView]:
    refs = [r["transcript"] for r in records if r.get("transcript")]
    transcripts = dict(zip(refs, load_transcripts(store, refs), strict=True))
    return [
        CallView(
            role=r["role"], node=r["node"], round=r["round"], model=r["model"], ok=r["ok"], error=r.get("error"),
            prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"],
            cached_tokens=r.get("cached_tokens") or 0, latency_s=r["latency_s"], cache_hit=bool(r.get("cache_hit")),
            job_id=r.get("job_id"), moved=bool(r.get("moved")), document_chars=r.get("document_chars"),
            document_tokens=r.get("document_tokens"),
            transcript=transcripts[ref] if (ref := r.get("transcript")) else None,
        )
        for r in records
    ]


def _round_of(values: dict[str, Any], nxt: tuple[str, ...]) -> int | None:
    """The round a checkpoint is at: for MinionS, the round it starts (None at the
    start and the end of a run); Minion counts its turns in state."""
    if "rounds" in values and "state_version" in values:
        return len(values["rounds"]) + 1 if "round" in nxt else None
    return values.get("round")


def thread_history(saver: BaseCheckpointSaver[Any], store: BaseStore, thread_id: str) -> list[CheckpointView]:
    graph = _graph(saver, store, thread_id, _settings(saver, thread_id))
    return [
        CheckpointView(
            checkpoint_id=s.config["configurable"]["checkpoint_id"], step=s.metadata.get("step", -1) if s.metadata else -1,
            source=(s.metadata or {}).get("source", ""), next=list(s.next), round=_round_of(s.values, s.next),
            created=datetime.fromisoformat(s.created_at) if s.created_at else datetime.now(UTC),
        )
        for s in graph.get_state_history({"configurable": {"thread_id": thread_id}})
    ]
