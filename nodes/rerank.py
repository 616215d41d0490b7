"""rerank (a composition example): a step between ``filter`` and ``aggregate`` that
orders the kept outputs by how well the document supports them and how relevant
their evidence is to the question, and forwards only the best ``top_k``. Fewer
outputs mean a shorter aggregation prompt: fewer remote tokens per round.

    builder = minions_builder(after={"filter": [("rerank", make_rerank(3))]})

It reads and writes ``RoundState`` like the built-in steps: ``kept`` (the outputs
the supervisor will see) and ``filter_stats`` (the dropped ones are counted with
``dropped_over_cap``, so the supervisor's prompt and ``show`` stay truthful).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime
from minionflow.contracts.events import emit
from minionflow.contracts.state import RoundState


def score(output: dict[str, Any]) -> float:
    """Support of the answer in its chunk plus relevance of its evidence to the question
    (both from the grounding check, 0 when absent)."""
    return float(output.get("support") or 0.0) + float(output.get("relevance") or 0.0)


def make_rerank(top_k: int) -> Callable[[RoundState, Runtime[Any]], dict[str, Any]]:
    if top_k < 1:
        raise ValueError("top_k must be at least 1")

    def rerank(state: RoundState, runtime: Runtime[Any]) -> dict[str, Any]:  # noqa: ARG001 - a node's signature
        kept = list(state.get("kept") or [])
        ranked = sorted(kept, key=lambda k: (-score(k), k.get("job_id") or ""))[:top_k]
        stats = dict(state.get("filter_stats") or {})
        stats["dropped_over_cap"] = stats.get("dropped_over_cap", 0) + len(kept) - len(ranked)
        stats["kept"] = len(ranked)
        emit({"type": "rerank", "kept": len(ranked), "of": len(kept)})
        return {"kept": ranked, "filter_stats": stats}

    return rerank
