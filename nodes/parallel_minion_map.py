"""parallel_minion_map (local): one ``Send`` task per job, one local-model call
returning a ``JobOutput`` (a validated JSON reply, or a plain-text reply read
leniently, as the local model's spec says), checked against its chunk
(``nodes.grounding``). A bad reply is a recorded failure, never an exception that
cancels the job's siblings; transport errors are left to the node's RetryPolicy."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from minionflow.contracts.schemas import JobOutput
from minionflow.contracts.settings import ReplyFormat, RunSettings
from minionflow.contracts.state import JobInput, JobRecord, JobResult, ResultRef

from . import prompts
from .accounting import usage_records
from .common import batch_from_ref, emit, settings_from_ref, store_of, tokens_of
from .filter import is_abstention
from .grounding import Grounding, ground
from .models import CallRecord, ModelClient, ModelProvider, reply_text
from .replies import parse_text_reply
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


def worker_messages(job: JobRecord, chunk: str, reply: ReplyFormat = "json") -> list[Any]:
    advice = f"Advice: {job['advice']}" if job["advice"] else ""
    system = prompts.WORKER_TEXT_SYSTEM if reply == "text" else prompts.WORKER_SYSTEM
    return [SystemMessage(system), HumanMessage(prompts.WORKER_USER.format(chunk=chunk, task=job["task"], advice=advice))]


def ask_worker(client: ModelClient, messages: list[Any], reply: ReplyFormat) -> tuple[JobOutput | None, list[CallRecord], str | None]:
    """One job's model call: the output (None when the reply was unusable), the call
    records and the error."""
    if reply == "text":
        call = client.text(messages)
        if call.message is None:
            return None, [call], call.error or "no reply"
        # a text reply cut at the token limit still holds what came before the cut
        return parse_text_reply(reply_text(call.message)), [call], None
    structured = client.structured(JobOutput, messages)
    output = structured.parsed if isinstance(structured.parsed, JobOutput) else None
    return output, structured.calls, None if output is not None else (structured.error or "no reply")


def check_output(output: JobOutput, chunk: str, task: str, settings: RunSettings) -> Grounding | None:
    """The grounding of an output that answers (None for an abstention)."""
    if output.answer is None or is_abstention(output.answer):
        return None
    return ground(output.answer, output.citation, chunk, task, min_citation_score=settings.min_citation_score,
                  min_support=settings.min_answer_support)


def make_parallel_minion_map(models: ModelProvider) -> Callable[[JobInput, Runtime[Any]], dict[str, Any]]:
    def parallel_minion_map(inp: JobInput, runtime: Runtime[Any]) -> dict[str, Any]:
        store = store_of(runtime)
        batch, chunks = batch_from_ref(store, inp["jobs_ref"])
        job: JobRecord = batch["jobs"][inp["index"]]
        settings = settings_from_ref(store, batch["settings_ref"])
        chunk = chunks[job["chunk_ref"]]
        client = models.client(settings.local, "local", settings.local_max_tokens)
        reply = settings.local.reply
        with local_slot(settings.local_concurrency):
            output, calls, error = ask_worker(client, worker_messages(job, chunk, reply), reply)
        grounding = check_output(output, chunk, job["task"], settings) if output is not None else None
        blobs = BlobBatch()  # the result and the call transcripts, written in one round trip
        result = JobResult(
            job_id=job["job_id"], round=job["round"], attempt=job["attempt"], task_id=job["task_id"],
            chunk_id=job["chunk_id"], task=job["task"], status="ok" if output is not None else "failed",
            answer=output.answer if output else None,
            explanation=output.explanation if output else "",
            citation=output.citation if output else None,
            error=error, reply_format=reply,
            grounding=grounding.model_dump() if grounding is not None else None,
            usage=usage_records(calls, "local", "parallel_minion_map", job["round"], client.name, blobs),
        )
        # one event per job, its local tokens with it (benchmarks/overhead.py: a second event per job cost 0.3-0.7 ms)
        emit({"type": "job", "round": job["round"], "job_id": job["job_id"], "status": result["status"],
              "tokens": tokens_of(result["usage"], "local")})
        ref = blobs.json(result)
        blobs.write(store)
        return {"job_results": [ResultRef(job_id=job["job_id"], ref=ref)]}

    return parallel_minion_map
