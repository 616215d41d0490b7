"""parallel_minion_map (local): one ``Send`` task per job, one local-model call
returning a ``JobOutput`` (a validated JSON reply, or a plain-text reply read
leniently, as the local model's spec says), checked against its chunk
(``nodes.grounding``). A bad reply is a recorded failure, never an exception that
cancels the job's siblings; transport errors are left to the node's RetryPolicy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from minionflow.contracts.errors import is_transient
from minionflow.contracts.schemas import JobOutput
from minionflow.contracts.settings import ReplyFormat, RunSettings
from minionflow.contracts.state import JobInput, JobRecord, JobResult, ResultRef, UsageRecord

from . import prompts
from .accounting import usage_records
from .common import batch_from_ref, emit, settings_from_ref, store_of, tokens_of
from .context_guard import ContextOverflow, message_texts
from .filter import is_abstention
from .grounding import Grounding, ground
from .job_cache import JobCache, job_key
from .models import CallRecord, ModelClient, ModelProvider, reply_text
from .pool import endpoint_pool
from .replies import parse_text_reply
from .store import BlobBatch


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


def ask_or_recall(client: ModelClient, messages: list[Any], settings: RunSettings, cache: JobCache | None
                  ) -> tuple[JobOutput | None, list[CallRecord], str | None]:
    """``ask_worker``, through the job cache when the run keeps one: an identical
    request answered before is not sent again; a usable new output is kept."""
    reply = client.spec.reply
    if cache is None:
        return ask_worker(client, messages, reply)
    key = job_key(client.spec, settings.local_max_tokens, messages)
    hit = cache.recall(key, messages)
    if hit is not None:
        return hit[0], [hit[1]], None
    output, calls, error = ask_worker(client, messages, reply)
    # only a clean reply is kept (not one cut at the token limit, which a text reply still parses)
    if output is not None and error is None and calls and calls[-1].message is not None and calls[-1].error is None:
        cache.keep(key, output, calls[-1], reply_text(calls[-1].message))
    return output, calls, error


def read_chunk(client: ModelClient, job: JobRecord, chunk: str, settings: RunSettings, calls: list[CallRecord],
               cache: JobCache | None = None) -> tuple[JobOutput | None, str | None, int]:
    """Ask the job over its chunk: whole when the prompt fits the local model's context,
    else in parts split at sentence ends (``nodes.context_guard``), merged into one output
    (``merge_parts``). Returns the output, the error and the number of parts; a chunk that
    cannot be split to fit fails with the reason and no call. With a ``cache``, each call
    goes through the job cache (``ask_or_recall``). ``calls`` gets each part's calls as
    they return, so a caller whose read raised midway (an endpoint that failed on a later
    part) still has the calls that were answered and billed."""
    reply = client.spec.reply
    guard = client.context_guard()
    parts = [chunk]
    if guard is not None:
        try:
            parts = guard.parts(chunk, lambda text: message_texts(worker_messages(job, text, reply)),
                                settings.local_max_tokens)
        except ContextOverflow as exc:
            return None, str(exc), 0
    outputs: list[JobOutput | None] = []
    errors: list[str] = []
    for part in parts:
        output, part_calls, error = ask_or_recall(client, worker_messages(job, part, reply), settings, cache)
        outputs.append(output)
        calls += part_calls
        if error is not None:
            errors.append(error if len(parts) == 1 else f"part {len(outputs)} of {len(parts)}: {error}")
    if len(parts) == 1:
        return outputs[0], errors[0] if errors else None, 1
    merged = merge_parts(outputs, parts, job["task"], settings)
    return merged, None if merged is not None else "; ".join(errors), len(parts)


def merge_parts(outputs: list[JobOutput | None], parts: list[str], task: str, settings: RunSettings) -> JobOutput | None:
    """One output for a chunk read in parts: the best-grounded answer (a grounded one
    before an ungrounded one, then by its quote's match and its support), the other parts'
    answers named in its explanation. Without a grounded answer, a failure if a part
    failed (the answer may be in it); without any answer, the first part's abstention."""
    answering: list[tuple[JobOutput, Grounding]] = []
    for output, part in zip(outputs, parts, strict=True):
        grounding = check_output(output, part, task, settings) if output is not None else None
        if output is not None and grounding is not None:  # an answer (an abstention has no grounding)
            answering.append((output, grounding))
    failed = any(output is None for output in outputs)
    grounded = [pair for pair in answering if pair[1].grounded]
    if failed and not grounded:  # the answer may be in the part that failed: the job failed (and is retried)
        return None
    if not answering:
        return outputs[0]
    best, _ = max(grounded or answering, key=lambda pair: (pair[1].citation_score or 0.0, pair[1].answer_support))
    others = [output.answer for output, _ in answering if output is not best and output.answer != best.answer]
    note = f"(the chunk was read in {len(parts)} parts to fit the local model's context"
    note += f"; other parts answered: {'; '.join(a for a in others if a)})" if others else ")"
    return best.model_copy(update={"explanation": f"{best.explanation} {note}".strip()})


def make_parallel_minion_map(models: ModelProvider) -> Callable[[JobInput, Runtime[Any]], dict[str, Any]]:
    def parallel_minion_map(inp: JobInput, runtime: Runtime[Any]) -> dict[str, Any]:
        store = store_of(runtime)
        loaded = batch_from_ref(store, inp["jobs_ref"])
        job: JobRecord = loaded.batch["jobs"][inp["index"]]
        settings = settings_from_ref(store, loaded.batch["settings_ref"])
        chunk = loaded.chunk(store, inp["index"])
        # the result, the call transcripts and what the job cache keeps, written in one round trip
        blobs = BlobBatch()
        cache = JobCache(store, blobs) if settings.job_cache else None
        pool = endpoint_pool(settings, probe=lambda spec: models.client(spec, "local", settings.local_max_tokens).probe())
        # the calls to an endpoint that failed (what it answered, then the failure), after
        # which the job went to another
        moved: list[UsageRecord] = []
        while True:
            with pool.lease(inp["index"], job["chunk_ref"]) as spec:
                client = models.client(spec, "local", settings.local_max_tokens)
                started = time.monotonic()
                calls: list[CallRecord] = []  # as they return: after a failure, the parts answered before it
                try:
                    output, error, parts = read_chunk(client, job, chunk, settings, calls, cache)
                    break
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    if not is_transient(exc) or not pool.fail(spec, reason):
                        raise  # one endpoint (or the last one up): the node's RetryPolicy retries the job
                    # the parts this endpoint answered were billed: they count, where they ran
                    moved += usage_records(calls, "local", "parallel_minion_map", job["round"], client.name, blobs,
                                           job_id=job["job_id"])
                    failed = CallRecord(None, time.monotonic() - started, f"endpoint failed, job moved: {reason}")
                    for record in usage_records([failed], "local", "parallel_minion_map", job["round"], client.name,
                                                job_id=job["job_id"]):
                        record["moved"] = True
                        moved.append(record)
        reply = client.spec.reply
        grounding = check_output(output, chunk, job["task"], settings) if output is not None else None
        result = JobResult(
            job_id=job["job_id"], round=job["round"], attempt=job["attempt"], task_id=job["task_id"],
            chunk_id=job["chunk_id"], task=job["task"], status="ok" if output is not None else "failed",
            answer=output.answer if output else None,
            explanation=output.explanation if output else "",
            citation=output.citation if output else None,
            error=error, reply_format=reply,
            grounding=grounding.model_dump() if grounding is not None else None,
            usage=[*moved, *usage_records(calls, "local", "parallel_minion_map", job["round"], client.name, blobs,
                                          job_id=job["job_id"])],
            endpoint=client.name,
        )
        if parts != 1:
            result["parts"] = parts
        # one event per job, its local tokens with it (benchmarks/overhead.py: a second event per job cost 0.3-0.7 ms)
        emit({"type": "job", "round": job["round"], "job_id": job["job_id"], "status": result["status"],
              "tokens": tokens_of(result["usage"], "local")})
        ref = blobs.json(result)
        blobs.write(store)
        return {"job_results": [ResultRef(job_id=job["job_id"], ref=ref)]}

    return parallel_minion_map
