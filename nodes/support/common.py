"""Small helpers the steps share: a round's job batch and its chunks, the failed jobs to
try again, a run's document texts."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from langgraph.store.base import BaseStore
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import DocumentRef, JobBatch, JobRecord, JobResult, RoundRecord
from minionflow.storage.store import get_json, get_texts

from .context import RunContext


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


def batch_from_ref(context: RunContext, store: BaseStore, ref: str) -> LoadedBatch:
    """A round's job batch, read once per run (its chunks as its jobs ask for them:
    ``LoadedBatch.chunk``): the run's context keeps it, so a run reads its own store and
    two runs of the same inputs in one process never share a copy."""
    loaded: LoadedBatch = context.cached(ref, lambda: LoadedBatch(get_json(store, ref)))
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


__all__ = ["LoadedBatch", "batch_from_ref", "carried_over", "document_texts"]
