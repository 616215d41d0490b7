"""Token and cost accounting: one record per model call, totals per role, and the
remote-only estimate for the same task (tiktoken) to show the savings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from langgraph.store.base import BaseStore
from minionflow.contracts.events import emit_usage
from minionflow.contracts.settings import PriceTable
from minionflow.contracts.state import UsageRecord
from minionflow.storage.store import BlobBatch, get_json_many, get_texts
from pydantic import BaseModel

from .models import CallRecord, Role, reply_text
from .tokens import count_document, count_tokens


class TranscriptMessage(BaseModel):
    role: str  # system, human, ai
    content: str


class Transcript(BaseModel):
    """One model call as it happened: every message sent, and the reply (its text,
    or the tool-call arguments under function calling) or the error."""

    messages: list[TranscriptMessage]
    reply: str | None
    error: str | None


def transcript_blob(blobs: BlobBatch, call: CallRecord) -> str:
    """Add a call's transcript to a batch of blobs; returns its ref. Each message is
    a blob of its own, so the system prompt every job shares, or a worker prompt
    repeated in a later round, is stored once."""
    return blobs.json({
        "messages": [{"role": m.type, "ref": blobs.text(str(m.content))} for m in call.messages],
        "reply": reply_text(call.message) if call.message is not None else None,
        "error": call.error,
    })


def load_transcripts(store: BaseStore, refs: list[str]) -> list[Transcript]:
    stored = get_json_many(store, refs)
    texts = iter(get_texts(store, [m["ref"] for t in stored for m in t["messages"]]))
    return [
        Transcript(messages=[TranscriptMessage(role=m["role"], content=next(texts)) for m in t["messages"]],
                   reply=t["reply"], error=t["error"])
        for t in stored
    ]


def usage_records(calls: Iterable[CallRecord], role: Role, node: str, round_: int, model: str,
                  blobs: BlobBatch | None = None, job_id: str | None = None) -> list[UsageRecord]:
    """One usage record per call. With a batch of blobs, each call's transcript is
    added to it (the caller writes the batch) and the record points at it
    (``minionflow show --json`` prints them)."""
    records: list[UsageRecord] = []
    for call in calls:
        prompt, completion, cached = call.usage
        record = UsageRecord(
            role=role, node=node, round=round_, model=model,
            prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
            latency_s=round(call.latency_s, 4), ok=call.error is None, error=call.error,
        )
        if call.cache_hit:
            record["cache_hit"] = True
        if job_id is not None:
            record["job_id"] = job_id
        if blobs is not None:
            record["transcript"] = transcript_blob(blobs, call)
        records.append(record)
    return records


def record_calls(store: BaseStore, calls: Iterable[CallRecord], role: Role, node: str, round_: int,
                 model: str, from_documents: Sequence[str] | None = None) -> list[UsageRecord]:
    """What a node does with the calls it made: their usage records, their
    transcripts written to the store in one round trip, and a progress event with
    their tokens. ``from_documents``: the pieces of each call's prompt that came from the
    documents (a remote call's egress; none is an empty list)."""
    blobs = BlobBatch()
    records = usage_records(calls, role, node, round_, model, blobs)
    if from_documents is not None:
        chars = sum(len(piece) for piece in from_documents)
        tokens = sum(count_tokens(piece) for piece in from_documents)
        for record in records:
            if not record.get("cache_hit"):
                record["document_chars"], record["document_tokens"] = chars, tokens
    blobs.write(store)
    emit_usage(records)
    return records


class RoleTotals(BaseModel):
    calls: int = 0  # requests sent to the model
    cache_hits: int = 0  # jobs answered from the job cache instead, with no tokens
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0


class EndpointTotals(BaseModel):
    """One local endpoint's share of a run (a pool's endpoints, serving.pool)."""

    endpoint: str  # the spec's label
    jobs: int = 0  # minion jobs it answered (or failed with a bad reply)
    moved: int = 0  # jobs that went to another endpoint after it failed to answer
    calls: int = 0
    failed_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


class EgressRow(BaseModel):
    """What left the machine in one round (the egress ledger): the remote calls, the
    tokens they sent, and how much of that came from the documents."""

    round: int
    calls: int = 0
    prompt_tokens: int = 0
    document_chars: int = 0
    document_tokens: int = 0


class Egress(BaseModel):
    rounds: list[EgressRow] = []
    prompt_tokens: int = 0  # every remote prompt token
    document_chars: int = 0  # of which came from the documents
    document_tokens: int = 0


class UsageSummary(BaseModel):
    remote: RoleTotals
    local: RoleTotals
    endpoints: list[EndpointTotals] = []  # local calls per endpoint, in the order first used
    egress: Egress = Egress()
    total_cost_usd: float
    remote_only_prompt_tokens: int
    remote_only_completion_tokens: int
    remote_only_cost_usd: float
    savings_ratio: float | None  # remote-only cost / this run's cost; None when this run cost nothing


def role_totals(records: Iterable[UsageRecord], prices: PriceTable) -> dict[str, RoleTotals]:
    """Calls, tokens, latency and cost per role."""
    totals = {"remote": RoleTotals(), "local": RoleTotals()}
    for r in records:
        t = totals[r["role"]]
        if r.get("cache_hit"):
            t.cache_hits += 1
            continue
        t.calls += 1
        t.failed_calls += 0 if r["ok"] else 1
        t.prompt_tokens += r["prompt_tokens"]
        t.completion_tokens += r["completion_tokens"]
        t.cached_tokens += r["cached_tokens"]
        t.latency_s += r["latency_s"]
    for role, t in totals.items():
        t.cost_usd = getattr(prices, role).cost(t.prompt_tokens, t.completion_tokens, t.cached_tokens)
    return totals


def endpoint_totals(records: Iterable[UsageRecord]) -> list[EndpointTotals]:
    """Local calls, jobs and failures per endpoint."""
    totals: dict[str, EndpointTotals] = {}
    # a job is the endpoint's where its last call ran: one that moved may have had parts of
    # its chunk answered by the endpoint that failed (billed there, but not its job)
    ran_on: dict[str, str] = {}
    for r in records:
        if r["role"] != "local":
            continue
        t = totals.setdefault(r["model"], EndpointTotals(endpoint=r["model"]))
        if r.get("moved"):
            t.moved += 1
        elif r.get("job_id"):
            ran_on[r["job_id"]] = r["model"]
        if r.get("cache_hit"):
            t.cache_hits += 1
            continue
        t.calls += 1
        t.failed_calls += 0 if r["ok"] else 1
        t.prompt_tokens += r["prompt_tokens"]
        t.completion_tokens += r["completion_tokens"]
        t.latency_s = round(t.latency_s + r["latency_s"], 4)
    for name in ran_on.values():
        totals[name].jobs += 1
    return list(totals.values())


def egress(records: Iterable[UsageRecord]) -> Egress:
    """The egress ledger: per round, the remote calls' prompt tokens and the part of them
    that came from the documents (recorded by each node that sends document-derived text)."""
    rounds: dict[int, EgressRow] = {}
    for r in records:
        if r["role"] != "remote" or r.get("cache_hit"):
            continue
        row = rounds.setdefault(r["round"], EgressRow(round=r["round"]))
        row.calls += 1
        row.prompt_tokens += r["prompt_tokens"]
        row.document_chars += r.get("document_chars", 0)
        row.document_tokens += r.get("document_tokens", 0)
    rows = [rounds[k] for k in sorted(rounds)]
    return Egress(rounds=rows, prompt_tokens=sum(r.prompt_tokens for r in rows),
                  document_chars=sum(r.document_chars for r in rows), document_tokens=sum(r.document_tokens for r in rows))


def summarize(records: Iterable[UsageRecord], prices: PriceTable, task: str, documents: Iterable[str], answer: str) -> UsageSummary:
    records = list(records)
    totals = role_totals(records, prices)
    prompt = count_tokens(task) + sum(count_document(d) for d in documents)
    completion = count_tokens(answer)
    remote_only = prices.remote.cost(prompt, completion)
    total = totals["remote"].cost_usd + totals["local"].cost_usd
    return UsageSummary(
        remote=totals["remote"], local=totals["local"], endpoints=endpoint_totals(records), egress=egress(records),
        total_cost_usd=total,
        remote_only_prompt_tokens=prompt, remote_only_completion_tokens=completion,
        remote_only_cost_usd=remote_only,
        savings_ratio=(remote_only / total) if total > 0 else None,
    )
