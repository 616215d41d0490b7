"""parallel_minion_map (local): ``Send`` tasks of several jobs of the round's batch
(``sandboxed_execute.route_jobs``), each job one local-model call returning a
``JobOutput`` (a validated JSON reply, or a plain-text reply read leniently, as the
local model's spec says), checked against its chunk (``nodes.support.grounding``). A bad reply
is a recorded failure, never an exception that cancels the job's siblings; transport
errors are left to the node's RetryPolicy. Each job is durable the moment it ends: its
result is written with a record of it in the store (``DONE_NAMESPACE``), and a task that
runs again skips the jobs it finished."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore, GetOp, Item
from minionflow.contracts.errors import BadInput, is_transient
from minionflow.contracts.events import emit, tokens_of
from minionflow.contracts.schemas import JobOutput
from minionflow.contracts.settings import ModelSpec, ReplyFormat, RunSettings
from minionflow.contracts.state import JobInput, JobRecord, JobResult, ResultRef, UsageRecord
from minionflow.nodes.support import prompts
from minionflow.nodes.support.common import batch_from_ref
from minionflow.nodes.support.context import RunContext, context_of, settings_in_store, store_of
from minionflow.nodes.support.grounding import Grounding, ground
from minionflow.nodes.support.outputs import is_abstention, norm
from minionflow.nodes.support.replies import parse_text_reply
from minionflow.serving.accounting import usage_records
from minionflow.serving.context_guard import ContextOverflow, message_texts
from minionflow.serving.job_cache import JobCache, job_key
from minionflow.serving.models import CallRecord, ModelClient, Sampling, cut_off, reply_text, unheard_here
from minionflow.serving.pool import endpoint_pool
from minionflow.storage.store import BlobBatch, get_json


def worker_messages(job: JobRecord, chunk: str, reply: ReplyFormat = "json") -> list[Any]:
    advice = f"Advice: {job['advice']}" if job["advice"] else ""
    system = prompts.WORKER_TEXT_SYSTEM if reply == "text" else prompts.WORKER_SYSTEM
    return [SystemMessage(system), HumanMessage(prompts.WORKER_USER.format(chunk=chunk, task=job["task"], advice=advice))]


def ask_worker(client: ModelClient, messages: list[Any], reply: ReplyFormat, unheard: bool = False,
               sampling: Sampling | None = None) -> tuple[JobOutput | None, list[CallRecord], str | None]:
    """One job's model call: the output (None when the reply was unusable), the call
    records and the error. ``unheard``: no callback handler listens (``ModelClient.text``);
    ``sampling``: a sampled call (samples per task), else one at temperature 0."""
    if reply == "text":
        call = client.text(messages, unheard, sampling)
        if call.message is None:
            return None, [call], call.error or "no reply"
        # a text reply cut at the token limit still holds what came before the cut
        return parse_text_reply(reply_text(call.message)), [call], None
    structured = client.structured(JobOutput, messages, sampling)
    output = structured.parsed if isinstance(structured.parsed, JobOutput) else None
    return output, structured.calls, None if output is not None else (structured.error or "no reply")


Prepared = tuple[list[Any], str]  # a job's messages over its whole chunk, and their job_key


def prepare(spec: ModelSpec, job: JobRecord, chunk: str, settings: RunSettings) -> Prepared:
    """A job's messages over its whole chunk for the model ``spec``, and their
    ``job_key``: made once for the job cache's read ahead and the job's call."""
    messages = worker_messages(job, chunk, spec.reply)
    return messages, job_key(spec, settings.local_max_tokens, messages)


def check_output(output: JobOutput, chunk: str, task: str, settings: RunSettings) -> Grounding | None:
    """The grounding of an output that answers (None for an abstention)."""
    if output.answer is None or is_abstention(output.answer):
        return None
    return ground(output.answer, output.citation, chunk, task, min_citation_score=settings.min_citation_score,
                  min_support=settings.min_answer_support)


def ask_or_recall(client: ModelClient, messages: list[Any], settings: RunSettings, cache: JobCache | None,
                  unheard: bool = False, key: str | None = None, sampling: Sampling | None = None
                  ) -> tuple[JobOutput | None, list[CallRecord], str | None]:
    """``ask_worker``, through the job cache when the run keeps one: an identical
    request answered before is not sent again; a usable new output is kept. ``key``:
    the request's ``job_key``, when the caller has it already."""
    reply = client.spec.reply
    if cache is None:
        return ask_worker(client, messages, reply, unheard, sampling)
    key = key or job_key(client.spec, settings.local_max_tokens, messages, sampling)
    hit = cache.recall(key, messages)
    if hit is not None:
        output, call = hit
        return output, [call], None if output is not None else (call.error or "no reply")
    output, calls, error = ask_worker(client, messages, reply, unheard, sampling)
    last = calls[-1] if calls else None
    # a clean reply is kept, and one cut at the token limit (a text reply still parses; a JSON
    # one fails): at temperature 0 the same request gets the same cut reply
    if last is not None and last.message is not None and (
            (output is not None and error is None and last.error is None) or cut_off(last)):
        cache.keep(key, output, last, reply_text(last.message))
    return output, calls, error


def read_chunk(client: ModelClient, job: JobRecord, chunk: str, settings: RunSettings, calls: list[CallRecord],
               cache: JobCache | None = None, unheard: bool = False, whole: Prepared | None = None,
               sampling: Sampling | None = None) -> tuple[JobOutput | None, str | None, int]:
    """Ask the job over its chunk: whole when the prompt fits the local model's context,
    else in parts split at sentence ends (``serving.context_guard``), merged into one output
    (``merge_parts``). Returns the output, the error and the number of parts; a chunk that
    cannot be split to fit fails with the reason and no call. With a ``cache``, each call
    goes through the job cache (``ask_or_recall``). ``calls`` gets each part's calls as
    they return, so a caller whose read raised midway (an endpoint that failed on a later
    part) still has the calls that were answered and billed. ``unheard``: no callback
    handler listens (``ModelClient.text``). ``whole``: the whole chunk's messages and job
    key, when the caller made them already (``prepare``). ``sampling``: a sampled read
    (``read_samples``)."""
    reply = client.spec.reply
    guard = client.context_guard()
    # built once: measured against the context, then sent
    messages_whole, key_whole = whole if whole is not None else (worker_messages(job, chunk, reply), None)
    parts = [chunk]
    if guard is not None:
        try:
            parts = guard.parts(chunk, lambda text: message_texts(messages_whole if text is chunk
                                                                  else worker_messages(job, text, reply)),
                                settings.local_max_tokens)
        except ContextOverflow as exc:
            return None, str(exc), 0
    outputs: list[JobOutput | None] = []
    errors: list[str] = []
    for part in parts:
        messages, key = (messages_whole, key_whole) if part is chunk else (worker_messages(job, part, reply), None)
        output, part_calls, error = ask_or_recall(client, messages, settings, cache, unheard,
                                                  key if sampling is None else None, sampling)
        outputs.append(output)
        calls += part_calls
        if error is not None:
            errors.append(error if len(parts) == 1 else f"part {len(outputs)} of {len(parts)}: {error}")
    if len(parts) == 1:
        return outputs[0], errors[0] if errors else None, 1
    merged = merge_parts(outputs, parts, job["task"], settings)
    return merged, None if merged is not None else "; ".join(errors), len(parts)


def samplings(settings: RunSettings) -> list[Sampling]:
    """The sampled reads of a job after its first (``read_samples``): seeds 1, 2, ..."""
    return [Sampling(settings.sample_temperature, seed) for seed in range(1, settings.samples)]


def read_samples(client: ModelClient, job: JobRecord, chunk: str, settings: RunSettings, calls: list[CallRecord],
                 cache: JobCache | None = None, unheard: bool = False, whole: Prepared | None = None
                 ) -> tuple[JobOutput | None, str | None, int, int]:
    """``read_chunk`` ``settings.samples`` times (the paper's samples per task): the first
    at temperature 0 (the reply a single read gives, and shares the job cache with), the
    others at ``sample_temperature`` with seeds 1, 2, ...; one output by ``vote``. Returns
    the output, the error, the parts and how many replies gave the chosen answer."""
    output, error, parts = read_chunk(client, job, chunk, settings, calls, cache, unheard, whole)
    if settings.samples == 1:
        return output, error, parts, 1
    replies = [(output, error)]
    for sampling in samplings(settings):
        sampled, sample_error, _ = read_chunk(client, job, chunk, settings, calls, cache, unheard, sampling=sampling)
        replies.append((sampled, sample_error))
    chosen, votes = vote([o for o, _ in replies], chunk, job["task"], settings)
    errors = [e for _, e in replies if e]
    return chosen, None if chosen is not None else (errors[0] if errors else "no reply"), parts, votes


def vote(outputs: list[JobOutput | None], chunk: str, task: str, settings: RunSettings) -> tuple[JobOutput | None, int]:
    """One output of a job's samples: the answer most of its grounded replies give (a tie
    goes to the earlier reply), with how many gave it; without a grounded answer, the
    first reply that came back (an abstention, or an answer the filter will hold back);
    None when every reply failed."""
    grounded: dict[str, list[JobOutput]] = {}
    for output in outputs:
        if output is None:
            continue
        grounding = check_output(output, chunk, task, settings)
        if grounding is not None and grounding.grounded:
            grounded.setdefault(norm(output.answer or ""), []).append(output)
    if grounded:
        best = max(grounded.values(), key=len)  # max keeps the first of equals: the earlier reply
        note = f"({len(best)} of {len(outputs)} samples gave this answer)"
        return best[0].model_copy(update={"explanation": f"{best[0].explanation} {note}".strip()}), len(best)
    first = next((o for o in outputs if o is not None), None)
    return first, 1 if first is not None else 0


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


# A record of each finished job of a round, keyed by the round and the job's place:
# a task that runs again (a resume after a kill, a retry after one of its jobs failed
# to reach an endpoint) skips the jobs it finished before.
DONE_NAMESPACE = ("minionflow", "jobs_done")


def round_key() -> str | None:
    """The thread and the round a task runs in (its checkpoint namespace without the
    task's own part: the tasks of one round share it, a resumed round has the same), or
    None outside a graph run with a thread (a node called directly keeps no records)."""
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:
        return None
    thread = configurable.get("thread_id")
    if thread is None:
        return None
    return f"{thread}|{str(configurable.get('checkpoint_ns') or '').rpartition('|')[0]}"


def task_jobs(inp: JobInput) -> range:
    """The places in the batch of a task's jobs: ``count`` of them from ``index``, each
    ``stride`` after the last (``sandboxed_execute.route_jobs``)."""
    stride = inp.get("stride", 1)
    return range(inp["index"], inp["index"] + inp.get("count", 1) * stride, stride)


def done_keys(run: str, jobs_ref: str, indices: range) -> list[str]:
    """The keys of the records of a round's finished jobs (``DONE_NAMESPACE``)."""
    return [f"{run}|{jobs_ref}|{i}" for i in indices]


def finished_jobs(store: BaseStore, run: str, jobs_ref: str, indices: range) -> dict[int, ResultRef]:
    """The result references of the jobs among ``indices`` that a record says finished
    in the round ``run`` (``round_key``), by place, in one store round trip."""
    return _finished(store, dict(zip(indices, done_keys(run, jobs_ref, indices), strict=True)))


def _finished(store: BaseStore, keys: dict[int, str]) -> dict[int, ResultRef]:
    """``finished_jobs`` of the record keys of the jobs at their places."""
    items = store.batch([GetOp(DONE_NAMESPACE, key) for key in keys.values()])
    return {i: ResultRef(**item.value) for i, item in zip(keys, items, strict=True) if isinstance(item, Item)}


def parallel_minion_map(inp: JobInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The task's jobs (``task_jobs``), one after another, each with its own slot of
    the pool (in batch order across the round's tasks); those a record says are done
    are not run again. A transport error goes to the node's RetryPolicy, whose next
    attempt runs the jobs not done."""
    store = store_of(runtime)
    # (a served graph's run with no context: the settings the round's jobs were made with)
    def batch_settings() -> tuple[RunSettings, str]:
        ref = get_json(store, inp["jobs_ref"])["settings_ref"]
        return settings_in_store(store, ref), ref

    context = context_of(runtime, thread_settings=batch_settings)
    loaded = batch_from_ref(context, store, inp["jobs_ref"])
    jobs = loaded.batch["jobs"]
    if loaded.batch["settings_ref"] != context.settings_ref:
        if context.requested is None:
            raise BadInput("this round's jobs were made with other settings than the run's context holds; continue "
                           "the thread with its own")
        context.adopt(*batch_settings())  # a served run going on with a thread mid-round: the thread's
    settings = context.run_settings
    models = context.model_provider
    indices = task_jobs(inp)
    run = round_key()
    keys = dict(zip(indices, done_keys(run, inp["jobs_ref"], indices), strict=True)) if run else {}
    done = _finished(store, keys) if run else {}
    pending = [i for i in indices if i not in done]
    loaded.read_chunks(store, pending)  # the task's chunks left to read, in one round trip
    pool = endpoint_pool(settings, probe=lambda spec: models.client(spec, "local", settings.local_max_tokens).probe())
    cache = JobCache(store, BlobBatch()) if settings.job_cache else None
    prefetched: set[ModelSpec] = set()
    prepared: dict[tuple[ModelSpec, int], Prepared] = {}  # by the model and the job's place
    unheard = unheard_here()  # once for the task's jobs: the run's callbacks do not change within it
    for position, index in enumerate(pending):
        job: JobRecord = jobs[index]
        chunk = loaded.chunk(store, index)
        # the job's result, call transcripts and what the job cache keeps, written in one round trip
        blobs = BlobBatch()
        if cache is not None:
            cache.pending = blobs
        # the calls to an endpoint that failed (what it answered, then the failure), after
        # which the job went to another
        moved: list[UsageRecord] = []
        while True:
            with pool.lease(index, job["chunk_ref"]) as spec:
                client = models.client(spec, "local", settings.local_max_tokens)
                if cache is not None and client.spec not in prefetched:
                    # what the cache has for this and the task's later jobs (whole chunks), in one read
                    prefetched.add(client.spec)
                    for i in pending[position:]:
                        prepared[(client.spec, i)] = prepare(client.spec, jobs[i], loaded.chunk(store, i), settings)
                    wanted = [prepared[(client.spec, i)][1] for i in pending[position:]]
                    # and each sample's (the whole chunk's messages under its temperature and seed)
                    wanted += [job_key(client.spec, settings.local_max_tokens, prepared[(client.spec, i)][0], sampling)
                               for i in pending[position:] for sampling in samplings(settings)]
                    cache.prefetch(wanted)
                started = time.monotonic()
                calls: list[CallRecord] = []  # as they return: after a failure, the parts answered before it
                try:
                    output, error, parts, votes = read_samples(client, job, chunk, settings, calls, cache, unheard,
                                                               prepared.pop((client.spec, index), None))
                    break
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    if not is_transient(exc) or not pool.fail(spec, reason):
                        raise  # one endpoint (or the last one up): the RetryPolicy runs the task again
                    # the parts this endpoint answered were billed: they count, where they ran
                    moved += usage_records(calls, "local", "parallel_minion_map", job["round"], client.name,
                                           blobs, job_id=job["job_id"])
                    failed = CallRecord(None, time.monotonic() - started, f"endpoint failed, job moved: {reason}")
                    for record in usage_records([failed], "local", "parallel_minion_map", job["round"],
                                                client.name, job_id=job["job_id"]):
                        record["moved"] = True
                        moved.append(record)
        result = job_result(job, chunk, client, settings, output, error, parts,
                            [*moved, *usage_records(calls, "local", "parallel_minion_map", job["round"],
                                                    client.name, blobs, job_id=job["job_id"])], votes)
        done[index] = ResultRef(job_id=job["job_id"], ref=blobs.json(result))
        if run:
            blobs.put(DONE_NAMESPACE, keys[index], dict(done[index]))
        blobs.write(store)  # the job is durable from here
    return {"job_results": [done[i] for i in indices]}



def job_result(job: JobRecord, chunk: str, client: ModelClient, settings: RunSettings, output: JobOutput | None,
               error: str | None, parts: int, usage: list[UsageRecord], votes: int = 1) -> JobResult:
    """A finished job's result (its output checked against its chunk), and its progress
    event with its local tokens. ``votes``: of ``settings.samples`` replies, how many gave
    its answer."""
    grounding = check_output(output, chunk, job["task"], settings) if output is not None else None
    result = JobResult(
        job_id=job["job_id"], round=job["round"], attempt=job["attempt"], task_id=job["task_id"],
        chunk_id=job["chunk_id"], task=job["task"], status="ok" if output is not None else "failed",
        answer=output.answer if output else None,
        explanation=output.explanation if output else "",
        citation=output.citation if output else None,
        error=error, reply_format=client.spec.reply,
        grounding=grounding.model_dump() if grounding is not None else None,
        usage=usage, endpoint=client.name,
    )
    if parts != 1:
        result["parts"] = parts
    if settings.samples > 1:
        result["samples"], result["votes"] = settings.samples, votes
    # one event per job, its local tokens with it (benchmarks/overhead.py: a second event per job cost 0.3-0.7 ms)
    emit({"type": "job", "round": job["round"], "job_id": job["job_id"], "status": result["status"],
          "tokens": tokens_of(result["usage"], "local")})
    return result
