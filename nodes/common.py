"""Small helpers shared by the node modules."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import DocumentRef, JobBatch, JobRecord, JobResult, RoundRecord

from .store import get_json, get_texts

# Parsed settings and job batches, per store object (a run opens its own), then by
# content hash: a run reads its own store once per batch, and two runs of the same
# inputs in one process never read each other's copy.
_settings_by_ref: weakref.WeakKeyDictionary[BaseStore, dict[str, RunSettings]] = weakref.WeakKeyDictionary()


def store_of(runtime: Runtime[Any]) -> BaseStore:
    """The blob store a node reaches through its ``Runtime`` (the graph's ``store``)."""
    if runtime.store is None:
        raise ValueError("minionflow nodes keep texts in a LangGraph store: compile the graph with one, "
                         "e.g. graph.compile(store=InMemoryStore())")
    return runtime.store


def settings_of(state: Mapping[str, Any]) -> RunSettings:
    """The run's settings, validated (they live in state so a resumed run keeps them)."""
    return RunSettings.model_validate(state["settings"])


def settings_from_ref(store: BaseStore, ref: str) -> RunSettings:
    """Settings by content hash, for Send tasks; immutable, so parsed once per store."""
    with _batches_lock:
        known = _settings_by_ref.setdefault(store, {})
    settings = known.get(ref)
    if settings is None:
        if len(known) > 256:
            known.clear()
        settings = known[ref] = RunSettings.model_validate(get_json(store, ref))
    return settings


class LoadedBatch:
    """A round's job batch, and the chunk texts of its jobs, read as the round's tasks ask
    for them: each task reads those of its jobs left to run in one round trip
    (``read_chunks``), so a resumed round reads no chunk of a finished job."""

    def __init__(self, batch: JobBatch) -> None:
        self.batch = batch
        self._chunks: dict[str, str] = {}
        self._lock = threading.Lock()

    def read_chunks(self, store: BaseStore, indices: Iterable[int]) -> None:
        """Read the chunks of jobs ``indices`` not read yet, in one round trip (outside the
        lock: the other tasks' jobs go on with the chunks they have)."""
        jobs = self.batch["jobs"]
        with self._lock:
            refs = sorted({jobs[i]["chunk_ref"] for i in indices} - self._chunks.keys())
        if refs:
            texts = get_texts(store, refs)
            with self._lock:
                self._chunks.update(zip(refs, texts, strict=True))

    def chunk(self, store: BaseStore, index: int) -> str:
        """The chunk text of job ``index`` (read now if no ``read_chunks`` had it)."""
        ref = self.batch["jobs"][index]["chunk_ref"]
        with self._lock:
            text = self._chunks.get(ref)
        if text is None:
            self.read_chunks(store, [index])
            with self._lock:
                text = self._chunks[ref]
        return text


_batches_by_ref: weakref.WeakKeyDictionary[BaseStore, dict[str, LoadedBatch]] = weakref.WeakKeyDictionary()
_batches_lock = threading.Lock()


def batch_from_ref(store: BaseStore, ref: str) -> LoadedBatch:
    """A round's job batch, read once per store (its chunks as its jobs ask for them:
    ``LoadedBatch.chunk``). Content addressing keeps the cache valid."""
    with _batches_lock:
        known = _batches_by_ref.setdefault(store, {})
        loaded = known.get(ref)
        if loaded is None:
            if len(known) > 4:
                known.clear()
            loaded = known[ref] = LoadedBatch(get_json(store, ref))
        return loaded


def carried_over(store: BaseStore, rounds: list[RoundRecord], settings: RunSettings) -> list[JobRecord]:
    """The last round's failed jobs that may be tried again (``max_job_attempts``):
    the next round runs them besides its own."""
    if not rounds or not rounds[-1]["jobs_ref"] or not rounds[-1]["results_ref"]:
        return []
    jobs: list[JobRecord] = get_json(store, rounds[-1]["jobs_ref"])["jobs"]
    results: list[JobResult] = get_json(store, rounds[-1]["results_ref"])
    failed = {r["job_id"] for r in results if r["status"] == "failed"}
    return [j for j in jobs if j["job_id"] in failed and j["attempt"] < settings.max_job_attempts]


def document_texts(store: BaseStore, documents: list[DocumentRef]) -> list[str]:
    """The texts of a run's documents, in one store round trip."""
    return get_texts(store, [d["sha256"] for d in documents])


def tokens_of(records: list[Any], role: str) -> int:
    """Prompt and completion tokens of one role's calls among ``records``."""
    return sum(r["prompt_tokens"] + r["completion_tokens"] for r in records if r["role"] == role)


def emit_usage(records: list[Any]) -> None:
    """A progress event with the tokens of the calls just made (for "tokens so far")."""
    for role in ("remote", "local"):
        tokens = tokens_of(records, role)
        if tokens:
            emit({"type": "usage", "role": role, "tokens": tokens})


def emit(event: dict[str, Any]) -> None:
    """Send a progress event on the ``custom`` stream; a no-op outside a graph run."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(event)
