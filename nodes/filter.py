"""filter: drop failures, abstentions and duplicates, cut huge answers, and cap
what is forwarded to the remote model."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from langgraph.config import get_store
from langgraph.types import Overwrite
from minionflow.graphs.state import JobResult, MinionsState

from .common import emit, settings_of
from .store import get_json_many, put_json

ABSTENTIONS = frozenset(
    {"", "none", "null", "nil", "n/a", "na", "unknown", "not found", "no answer", "not mentioned",
     "not applicable", "not available", "not provided", "not specified", "not stated", "no information"}
)


def _norm(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").strip().strip(".").lower())


def is_abstention(answer: str | None) -> bool:
    return _norm(answer) in ABSTENTIONS


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit].rstrip() + " [...]"


def filter_results(results: list[JobResult], max_forwarded: int, max_chars: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    stats = {"jobs": len(results), "failed": 0, "abstained": 0, "duplicates": 0, "kept": 0, "dropped_over_cap": 0}
    seen: set[tuple[str, str]] = set()
    kept: list[dict[str, Any]] = []
    for r in sorted(results, key=lambda r: r["job_id"]):
        if r["status"] != "ok":
            stats["failed"] += 1
            continue
        if is_abstention(r["answer"]):
            stats["abstained"] += 1
            continue
        key = (_norm(r["task"]), _norm(r["answer"]))
        if key in seen:
            stats["duplicates"] += 1
            continue
        seen.add(key)
        kept.append(
            {
                "job_id": r["job_id"], "task": r["task"],
                "answer": _cut(r["answer"], max_chars),
                "citation": _cut(r["citation"], max_chars),
                "explanation": _cut(r["explanation"], max_chars),
            }
        )
    stats["dropped_over_cap"] = max(len(kept) - max_forwarded, 0)
    kept = kept[:max_forwarded]
    stats["kept"] = len(kept)
    return kept, stats


Selector = Callable[[list[JobResult], int, int], tuple[list[dict[str, Any]], dict[str, int]]]


def make_filter(select: Selector) -> Callable[[MinionsState], dict[str, Any]]:
    """A filter node around a selection rule ``(results, max_forwarded, max_chars) ->
    (kept, stats)``: it loads the round's results, keeps what the rule keeps, and
    archives the results as one blob (state keeps only its reference)."""

    def filter_node(state: MinionsState) -> dict[str, Any]:
        settings = settings_of(state)
        store = get_store()
        refs = sorted(state.get("job_results") or [], key=lambda r: r["job_id"])
        results: list[JobResult] = get_json_many(store, [r["ref"] for r in refs])
        kept, stats = select(results, settings.max_forwarded_outputs, settings.max_answer_chars)
        emit({"type": "filter", "round": state["round"], **stats})
        return {"kept": kept, "filter_stats": stats, "results_ref": put_json(store, results), "job_results": Overwrite([])}

    return filter_node


filter_outputs = make_filter(filter_results)
