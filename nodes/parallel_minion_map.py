"""parallel_minion_map (local): one ``Send`` task per job, one local-model call
returning a validated ``JobOutput``. A bad reply is a recorded failure, never an
exception that cancels the job's siblings; transport errors are left to the
node's RetryPolicy."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.config import get_store
from langgraph.types import RetryPolicy
from minionflow.graphs.state import JobInput, JobRecord, JobResult, ResultRef

from . import prompts
from .accounting import usage_records
from .common import batch_from_ref, emit, emit_usage, settings_from_ref
from .models import TRANSIENT_ERRORS, ModelProvider
from .schemas import JobOutput
from .store import BlobBatch

_limits: dict[int, threading.BoundedSemaphore] = {}
_limits_lock = threading.Lock()


@contextmanager
def local_slot(limit: int) -> Iterator[None]:
    """Bound the number of local-model calls in flight in this process."""
    with _limits_lock:
        sem = _limits.setdefault(limit, threading.BoundedSemaphore(limit))
    with sem:
        yield


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


TRANSIENT_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=is_transient)


def worker_messages(job: JobRecord, chunk: str) -> list[Any]:
    advice = f"Advice: {job['advice']}" if job["advice"] else ""
    return [
        SystemMessage(prompts.WORKER_SYSTEM),
        HumanMessage(prompts.WORKER_USER.format(chunk=chunk, task=job["task"], advice=advice)),
    ]


def make_parallel_minion_map(models: ModelProvider) -> Callable[[JobInput], dict[str, Any]]:
    def parallel_minion_map(inp: JobInput) -> dict[str, Any]:
        store = get_store()
        batch, chunks = batch_from_ref(store, inp["jobs_ref"])
        job: JobRecord = batch["jobs"][inp["index"]]
        settings = settings_from_ref(store, batch["settings_ref"])
        chunk = chunks[job["chunk_ref"]]
        client = models.client(settings.local, "local", settings.local_max_tokens)
        with local_slot(settings.local_concurrency):
            reply = client.structured(JobOutput, worker_messages(job, chunk))
        output = reply.parsed if isinstance(reply.parsed, JobOutput) else None
        blobs = BlobBatch()  # the result and the call transcripts, written in one round trip
        result = JobResult(
            job_id=job["job_id"], round=job["round"], attempt=job["attempt"], task_id=job["task_id"],
            chunk_id=job["chunk_id"], task=job["task"], status="ok" if output is not None else "failed",
            answer=output.answer if output else None,
            explanation=output.explanation if output else "",
            citation=output.citation if output else None,
            error=None if output is not None else (reply.error or "no reply"),
            usage=usage_records(reply.calls, "local", "parallel_minion_map", job["round"], client.name, blobs),
        )
        emit_usage(result["usage"])
        emit({"type": "job", "round": job["round"], "job_id": job["job_id"], "status": result["status"]})
        ref = blobs.json(result)
        blobs.write(store)
        return {"job_results": [ResultRef(job_id=job["job_id"], ok=output is not None, ref=ref)]}

    return parallel_minion_map
