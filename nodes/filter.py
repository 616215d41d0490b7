"""filter: drop failures, abstentions, ungrounded outputs and duplicates, cut huge
answers, rank what is left by its relevance to the question, and cap what is
forwarded to the remote model (``nodes.support.outputs`` holds the steps of that; this
module, the default rule: every usable output once per task and answer). What the
supervisor reads as an output's citation is its evidence: the chunk's own words.
"""

from __future__ import annotations

from typing import Any

from minionflow.contracts.state import JobResult
from minionflow.nodes.support.outputs import cap, classify, empty_stats, forwarded, make_filter, norm


def filter_results(results: list[JobResult], max_forwarded: int, max_chars: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The default rule: every usable output once per (task, answer), in the order given."""
    stats = empty_stats(results, duplicates=0)
    seen: set[tuple[str, str]] = set()
    kept: list[dict[str, Any]] = []
    for r in results:
        verdict = classify(r)
        if verdict != "usable":
            stats[verdict] += 1
            continue
        key = (norm(r["task"]), norm(r["answer"]))
        if key in seen:
            stats["duplicates"] += 1
            continue
        seen.add(key)
        kept.append(forwarded(r, max_chars))
    return cap(kept, stats, max_forwarded), stats


filter_outputs = make_filter(filter_results)
