"""State schemas of the MinionS graph.

State is plain data (TypedDicts of JSON-compatible values), so checkpoints need
no custom serializer. SqliteSaver writes the whole state into every checkpoint,
so text and per-job data never live in state: the documents, chunks, the job
list of a round and every job's result are content-addressed blobs in the store,
and state holds their sha256 references (docs/architecture.md, guarantee 4).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, NotRequired

from typing_extensions import TypedDict


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
    # blob ref of the call's transcript (serving.accounting.Transcript): every message sent, the reply
    transcript: NotRequired[str | None]
    # answered from the job cache (serving.job_cache): no request, no tokens; not counted as a call
    cache_hit: NotRequired[bool]
    # a local call to a pool endpoint that failed to answer (serving.pool): the job went to another
    moved: NotRequired[bool]
    job_id: NotRequired[str]  # a minion job's call: the job it was for
    # a remote call: how much of what it sent came from the documents (minion answers,
    # quotes and explanations, a Minion's replies, or the documents themselves), the
    # egress ledger (serving.accounting)
    document_chars: NotRequired[int]
    document_tokens: NotRequired[int]


class JobResult(TypedDict):
    """A job's outcome, stored as a blob (with the usage of its model calls)."""

    job_id: str
    round: int
    attempt: int
    task_id: int | None
    chunk_id: int | None
    task: str
    status: Literal["ok", "failed"]
    answer: str | None
    explanation: str
    citation: str | None
    error: str | None
    usage: list[UsageRecord]
    reply_format: NotRequired[str]  # json or text: how the local model replied
    # nodes.support.grounding.Grounding of an answer (None for an abstention or a failure):
    # grounded, reason, citation_score, answer_support, evidence
    grounding: NotRequired[dict[str, Any] | None]
    # how many parts the chunk was read in to fit the local model's context (serving.context_guard)
    parts: NotRequired[int]
    # the local endpoint that answered the job (its spec's label; serving.pool)
    endpoint: NotRequired[str]
    # with samples per task (settings.samples > 1): the replies asked, and how many gave the answer
    samples: NotRequired[int]
    votes: NotRequired[int]


class ResultRef(TypedDict):
    """What a finished job writes into the round's state: its id and the blob of its result."""

    job_id: str
    ref: str


class RoundRecord(TypedDict):
    round: int
    plan_source: Literal["supervisor", "fallback", "builtin"]
    code: str | None
    code_errors: list[str]
    jobs: int
    failed: int
    abstained: int
    ungrounded: NotRequired[int]  # outputs the grounding check held back (threads from before it: absent)
    kept: int
    filter_stats: NotRequired[dict[str, int]]  # the filter's counts (nodes.filter)
    sandbox: NotRequired[str | None]  # the backend that ran the supervisor's code (None: no code ran)
    jobs_ref: str | None
    results_ref: str | None
    kept_ref: str | None
    decision: dict[str, Any]
    # what the round's remote calls cost (the remote budget, nodes.support.budget)
    remote_tokens: NotRequired[int]
    remote_usd: NotRequired[float]


class FinalAnswer(TypedDict):
    """The run's answer, with how it came about: the rounds it took, whether the last round
    forced it, whether it is not the supervisor's own (``fallback``)."""

    answer: str
    explanation: str
    citations: list[str]
    rounds: int
    forced: bool
    fallback: bool
    # the passage of the documents the answer rests on, when it rests on one minion's
    # grounded answer (the extractive fallback, or a supervisor that took one as it is)
    quote: NotRequired[str | None]


def merge_results(left: list[ResultRef], right: list[ResultRef]) -> list[ResultRef]:
    """Accumulate a round's result references; a later result for a job id replaces
    an earlier one."""
    merged = {r["job_id"]: r for r in left}
    merged.update({r["job_id"]: r for r in right})
    return list(merged.values())


def merge_rounds(left: list[RoundRecord], right: list[RoundRecord]) -> list[RoundRecord]:
    """The run's round records by round number: a round subgraph returns every record
    it was given plus its own, and a record for a number already present replaces it."""
    merged = {r["round"]: r for r in left}
    merged.update({r["round"]: r for r in right})
    return [merged[n] for n in sorted(merged)]


# The layout of a MinionS thread's state. 2: each round is a subgraph (``RoundState``)
# under a run-level graph. Threads of layout 1 (minionflow 0.1, one flat graph) are
# refused by resume and fork with a message that says so.
STATE_VERSION = 2


class RunState(TypedDict, total=False):
    """The fields every run state has, whatever its protocol: the settings (and their
    content hash), the question, the documents, the model calls, the notes, the final
    answer, and with ``redact="pii"`` the placeholders' mapping. A protocol's state adds
    its own (``MinionsState``: the rounds; ``MinionState``: the chat)."""

    settings: dict[str, Any]
    settings_ref: str
    task: str
    documents: list[DocumentRef]
    usage: Annotated[list[UsageRecord], operator.add]
    notes: Annotated[list[str], operator.add]
    final: FinalAnswer | None
    # redact="pii": placeholder -> the value it stands for (nodes.support.redaction); never sent
    redactions: dict[str, str]


class MinionsState(RunState, total=False):
    """What a MinionS run keeps across rounds. Everything a round needs only while it
    runs lives in ``RoundState`` and ends with the round's subgraph."""

    state_version: int
    source_documents: list[DocumentRef]  # set by a step that narrows `documents` (nodes.retrieve)
    rounds: Annotated[list[RoundRecord], merge_rounds]
    scratchpad: str | None


# the fields a MinionS run starts with beyond the shared ones (nodes.ingest.run_state)
MINIONS_START: dict[str, Any] = {"state_version": STATE_VERSION, "rounds": [], "scratchpad": None}


class RoundInput(TypedDict, total=False):
    """What a round reads from the run: the question, the documents, the settings and
    the earlier rounds (their records and the supervisor's scratchpad)."""

    settings: dict[str, Any]
    settings_ref: str
    task: str
    documents: list[DocumentRef]
    rounds: list[RoundRecord]
    scratchpad: str | None
    redactions: dict[str, str]  # the run's mapping so far (the round's filter extends it)


class RoundOutput(TypedDict, total=False):
    """What a round gives back to the run: the records (earlier ones and its own), the
    scratchpad, its model calls and notes, and the final answer if it found one."""

    rounds: list[RoundRecord]
    scratchpad: str | None
    usage: list[UsageRecord]
    notes: list[str]
    final: FinalAnswer | None
    redactions: dict[str, str]


class RoundState(RoundInput, total=False):
    """One round of MinionS: decompose -> sandboxed_execute -> parallel_minion_map x N
    -> filter -> aggregate. A new round starts from ``RoundInput`` alone, so nothing
    of the last round's working state can leak into it."""

    code: str | None
    code_errors: list[str]
    plan_source: Literal["supervisor", "fallback", "builtin"]
    sandbox: str  # the backend that ran the supervisor's code this round
    jobs_ref: str | None
    job_count: int
    job_results: Annotated[list[ResultRef], merge_results]
    results_ref: str | None
    kept: list[dict[str, Any]]
    filter_stats: dict[str, int]
    usage: Annotated[list[UsageRecord], operator.add]
    notes: Annotated[list[str], operator.add]
    final: FinalAnswer | None


def round_number(state: RoundInput | MinionsState) -> int:
    """The number of the round that runs now (or runs next, for run-level state): a
    round's record is written by its last step."""
    return len(state.get("rounds") or []) + 1


class JobBatch(TypedDict):
    """A round's jobs, stored as one blob: the job list and the settings to run them with."""

    settings_ref: str
    jobs: list[JobRecord]


class JobInput(TypedDict):
    """What one ``Send`` hands to ``parallel_minion_map``: the reference of the round's
    ``JobBatch`` blob and the places of the task's jobs in it: ``count`` of them (absent:
    one) from ``index``, each ``stride`` after the last (absent: 1). Sends are stored in
    the checkpoint (twice), so they carry references only: at a thousand jobs every byte
    counts."""

    jobs_ref: str
    index: int
    count: NotRequired[int]
    stride: NotRequired[int]


# --- the other protocols ------------------------------------------------------------


class ChatTurn(TypedDict):
    """One message of the Minion chat. The remote model's questions and the local
    model's answers; never the document."""

    round: int
    role: Literal["remote", "local"]
    content: str


class MinionState(RunState, total=False):
    """The Minion (singular) chat protocol: the local model holds the documents,
    the remote model asks it questions until it can answer."""

    round: int
    decision: dict[str, Any] | None
    conversation: Annotated[list[ChatTurn], operator.add]


class ReadAllState(RunState, total=False):
    """A baseline: one model (remote or local) reads every document and answers."""
