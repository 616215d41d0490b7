"""State schemas of the MinionS graph.

State is plain data (TypedDicts of JSON-compatible values): checkpoints then need
no custom serializer, and document text stays out of them (only sha256
references to the blob store; invariant 4).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

from typing_extensions import TypedDict

from langgraph.types import Overwrite


class DocumentRef(TypedDict):
    sha256: str
    title: str
    chars: int
    pages: int


class JobRecord(TypedDict):
    job_id: str
    round: int
    attempt: int
    chunk_ref: str
    chunk_chars: int
    chunk_id: int | None
    task_id: int | None
    task: str
    advice: str


class JobResult(TypedDict):
    job_id: str
    round: int
    task_id: int | None
    chunk_id: int | None
    task: str
    status: Literal["ok", "failed"]
    answer: str | None
    explanation: str
    citation: str | None
    error: str | None


class UsageRecord(TypedDict):
    role: Literal["remote", "local"]
    node: str
    round: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    latency_s: float
    ok: bool
    error: str | None


class RoundRecord(TypedDict):
    round: int
    plan_source: Literal["supervisor", "fallback"]
    code: str | None
    code_errors: list[str]
    jobs: int
    failed: int
    abstained: int
    kept: list[dict[str, Any]]
    decision: dict[str, Any]


class FinalAnswer(TypedDict):
    answer: str
    explanation: str
    citations: list[str]
    rounds: int
    forced: bool
    fallback: bool


def merge_job_results(left: list[JobResult], right: list[JobResult]) -> list[JobResult]:
    """Accumulate one round's job results; a later result for a job id replaces an earlier one."""
    merged = {r["job_id"]: r for r in left}
    merged.update({r["job_id"]: r for r in right})
    return list(merged.values())


class MinionsState(TypedDict, total=False):
    settings: dict[str, Any]
    task: str
    documents: list[DocumentRef]
    round: int
    code: str | None
    code_errors: list[str]
    plan_source: Literal["supervisor", "fallback"]
    jobs: list[JobRecord]
    retry_jobs: list[JobRecord]
    prev_jobs: list[JobRecord]
    prev_results: list[JobResult]
    job_results: Annotated[list[JobResult], merge_job_results]
    kept: list[dict[str, Any]]
    filter_stats: dict[str, int]
    feedback: str | None
    scratchpad: str | None
    decision: dict[str, Any] | None
    rounds: Annotated[list[RoundRecord], operator.add]
    usage: Annotated[list[UsageRecord], operator.add]
    notes: Annotated[list[str], operator.add]
    final: FinalAnswer | None


class JobInput(TypedDict):
    """What one ``Send`` hands to ``parallel_minion_map``."""

    job: JobRecord
    settings: dict[str, Any]


def reset_job_results() -> Overwrite:
    return Overwrite([])
