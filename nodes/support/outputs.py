"""What a filter does with a round's outputs, for the filter steps and for a rule of your
own (``make_filter(rule)``): ``classify`` tells a failure, an abstention, an ungrounded and
a usable output apart; ``forwarded`` is an output as the supervisor reads it (its quote is
its evidence, the chunk's own words, and long texts are ``cut``); ``rank`` orders the
usable ones by relevance to the question; ``cap`` keeps the first ``max_forwarded`` and
counts the rest; ``norm`` is the form answers and tasks are compared in.

An output is *ungrounded* when its citation is not in its chunk or its chunk does not
support its answer (``nodes.support.grounding``, checked by the map). It stays in the
round's results (``minionflow show`` lists it, with the reason) and is counted in the
filter's stats, but the supervisor never reads it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from minionflow.contracts.events import emit
from minionflow.contracts.state import JobResult, RoundState, round_number
from minionflow.storage.store import get_json_many, put_json

from .context import RunContext, context_of, store_of
from .grounding import relevance
from .redaction import redact_outputs
from .replies import says_not_found


def norm(text: str | None) -> str:
    """The form answers and tasks are compared in: lower case, spaces squeezed, no end stop."""
    return re.sub(r"\s+", " ", (text or "").strip().strip(".").lower())


def is_abstention(answer: str | None) -> bool:
    """The minion says its chunk does not hold the answer ("None", "not found", "The text
    does not mention the CFO."): one rule for JSON and text replies (``nodes.support.replies``)."""
    return says_not_found(answer)


_PLACEHOLDER_START = re.compile(r"<[A-Z_]*_?\d*$")


def cut(text: str | None, limit: int) -> str | None:
    """The text, cut at ``limit`` characters with a mark; never inside a redaction
    placeholder (``<PERSON_1>``)."""
    if text is None or len(text) <= limit:
        return text
    head = text[:limit]
    partial = _PLACEHOLDER_START.search(head)
    if partial and text[partial.start():].split(">", 1)[0].count(" ") == 0 and ">" in text[partial.start():]:
        head = head[: partial.start()]
    return head.rstrip() + " [...]"


def _uncut(kept: list[dict[str, Any]], results: list[JobResult]) -> list[dict[str, Any]]:
    """Kept outputs with their answers, quotes and explanations whole again (as the
    default rule forwards them, before its cut), for redaction."""
    by_id = {r["job_id"]: r for r in results}
    whole = []
    for k in kept:
        result = by_id.get(k.get("job_id", ""))
        if result is None:
            whole.append(k)
            continue
        full = forwarded(result, 10**9)
        whole.append({**k, **{f: full[f] for f in ("answer", "citation", "explanation")
                              if k.get(f) and full.get(f) and full[f].startswith(k[f].removesuffix(" [...]"))}})
    return whole


Verdict = Literal["failed", "abstained", "ungrounded", "usable"]  # what ``classify`` says of a result


def classify(result: JobResult) -> Verdict:
    """What the filter makes of one job's result."""
    if result["status"] != "ok":
        return "failed"
    if is_abstention(result["answer"]):
        return "abstained"
    grounding = result.get("grounding")
    if grounding is not None and not grounding.get("grounded", True):
        return "ungrounded"
    return "usable"


def evidence(result: JobResult) -> str | None:
    """What the supervisor reads as the output's quote: the chunk passage that grounds
    it (results from before grounding existed: the minion's own citation)."""
    grounding = result.get("grounding")
    if grounding is not None and grounding.get("evidence"):
        return str(grounding["evidence"])
    return result["citation"]


def forwarded(result: JobResult, max_chars: int, explanation: str | None = None) -> dict[str, Any]:
    """A result as the supervisor sees it (plus the scores the fallback ranks by)."""
    grounding = result.get("grounding") or {}
    return {
        "job_id": result["job_id"], "task": result["task"],
        "answer": cut(grounding.get("supported_answer") or result["answer"], max_chars),
        "citation": cut(evidence(result), max_chars),
        "explanation": cut(result["explanation"] if explanation is None else explanation, max_chars),
        "support": grounding.get("answer_support"), "relevance": grounding.get("relevance"),
    }


def empty_stats(results: list[JobResult], **extra: int) -> dict[str, int]:
    """A rule's counts before it looks at a result: ``jobs``, then ``failed``,
    ``abstained`` and ``ungrounded`` (a rule adds one for each ``classify`` verdict it
    drops), the rule's own counters (``extra``, e.g. ``duplicates=0``), then ``kept`` and
    ``dropped_over_cap``, which ``cap`` sets."""
    return {"jobs": len(results), "failed": 0, "abstained": 0, "ungrounded": 0, **extra, "kept": 0, "dropped_over_cap": 0}


def cap(kept: list[dict[str, Any]], stats: dict[str, int], max_forwarded: int) -> list[dict[str, Any]]:
    """The first ``max_forwarded`` of what a rule keeps (results come ranked): the one
    place the cap is applied, and counted, whatever the rule."""
    stats["dropped_over_cap"] = max(len(kept) - max_forwarded, 0)
    stats["kept"] = min(len(kept), max_forwarded)
    return kept[:max_forwarded]


def rank(results: list[JobResult], question: str) -> list[JobResult]:
    """Results with each usable one's relevance to the question (that of its evidence,
    the document's own words) recorded in its grounding, most relevant and best
    supported first (then by job id)."""
    usable = [r for r in results if classify(r) == "usable"]
    texts = [evidence(r) or r["answer"] or "" for r in usable]
    ranked: list[JobResult] = []
    for r, score in zip(usable, relevance(question, texts), strict=True):
        grounding = dict(r.get("grounding") or {"grounded": True})
        grounding["relevance"] = round(score, 3)
        ranked.append(JobResult(**{**r, "grounding": grounding}))  # type: ignore[typeddict-item]

    def key(r: JobResult) -> tuple[float, str]:
        g = r.get("grounding") or {}
        return -(float(g.get("relevance") or 0.0) + float(g.get("answer_support") or 0.0)), r["job_id"]

    rest = sorted((r for r in results if classify(r) != "usable"), key=lambda r: r["job_id"])
    return sorted(ranked, key=key) + rest


def failover_notes(results: list[JobResult], round_: int) -> list[str]:
    """One note per local endpoint that failed to answer in the round (serving.pool): how
    many jobs it gave up, where they went, and why."""
    moved: dict[str, list[str]] = {}
    for result in results:
        for record in result["usage"]:
            if record.get("moved"):
                moved.setdefault(record["model"], []).append(str(record.get("error") or ""))
    notes = []
    for endpoint, errors in moved.items():
        went = sorted({r.get("endpoint", "?") for r in results
                       if any(u.get("moved") and u["model"] == endpoint for u in r["usage"])} - {endpoint})
        reason = errors[0].removeprefix("endpoint failed, job moved: ")
        notes.append(f"round {round_}: local endpoint {endpoint} failed ({cut(reason, 160)}); its {len(errors)} "
                     f"job(s) went to {', '.join(went) or 'other endpoints'}")
    return notes


# a selection rule: (the round's results, ranked; max_forwarded_outputs; max_answer_chars) -> (kept, stats)
Selector = Callable[[list[JobResult], int, int], tuple[list[dict[str, Any]], dict[str, int]]]


def make_filter(select: Selector) -> Callable[[RoundState, Runtime[Any]], dict[str, Any]]:
    """A filter node around a selection rule ``(results, max_forwarded, max_chars) ->
    (kept, stats)``: it loads the round's results, ranks them (``rank``: usable ones
    first, by relevance to the question), keeps what the rule keeps, and archives the
    ranked results as one blob (state keeps only its reference). ``classify`` and
    ``forwarded`` give a rule the default's notion of a usable output and its form."""

    def filter_node(state: RoundState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        settings = context_of(runtime, state).run_settings
        store = store_of(runtime)
        refs = sorted(state.get("job_results") or [], key=lambda r: r["job_id"])
        results = rank(get_json_many(store, [r["ref"] for r in refs]), state["task"])
        kept, stats = select(results, settings.max_forwarded_outputs, settings.max_answer_chars)
        if len(kept) > settings.max_forwarded_outputs:  # a rule of the user's own is capped too
            already = stats.get("dropped_over_cap", 0)
            kept = cap(kept, stats, settings.max_forwarded_outputs)
            stats["dropped_over_cap"] += already
        mapping = None
        if settings.redact == "pii":  # what the supervisor reads, with personal data as placeholders
            kept, mapping = redact_outputs(_uncut(kept, results), state.get("redactions") or {})
            # redacted whole, then cut (a cut e-mail address would no longer be found), never inside a placeholder
            kept = [{**k, **{f: cut(k.get(f), settings.max_answer_chars) for f in ("answer", "citation", "explanation")}}
                    for k in kept]
        if settings.max_quote_chars is not None:  # the user's cap on each quote that leaves the machine
            kept = [{**k, "citation": cut(k.get("citation"), settings.max_quote_chars)} for k in kept]
        emit({"type": "filter", "round": round_number(state), **stats})
        archived = sorted(results, key=lambda r: r["job_id"])
        update: dict[str, Any] = {"kept": kept, "filter_stats": stats, "results_ref": put_json(store, archived),
                                  "job_results": Overwrite([])}
        if mapping is not None:
            update["redactions"] = mapping
        notes = failover_notes(results, round_number(state))
        if notes:
            update["notes"] = notes
        return update

    return filter_node


__all__ = [
    "Selector",
    "Verdict",
    "cap",
    "classify",
    "cut",
    "empty_stats",
    "evidence",
    "failover_notes",
    "forwarded",
    "is_abstention",
    "make_filter",
    "norm",
    "rank",
]
