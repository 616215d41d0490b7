"""majority_vote_filter (a composition example): a filter that keeps, for each
task, the answer most of the task's jobs agree on, and says how many agreed. It
replaces the default ``filter`` node with the same inputs and outputs; use it when
several jobs see the same evidence (overlapping chunks, or a job repeated as
several samples) and lone answers are more likely noise than signal.

    builder = minions_builder(filter_node=majority_vote_filter)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from minionflow.contracts.state import JobResult
from minionflow.nodes.support.outputs import cap, classify, cut, empty_stats, forwarded, make_filter, norm


def vote(results: list[JobResult], max_forwarded: int, max_chars: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    stats = empty_stats(results, outvoted=0)
    by_task: dict[str, list[JobResult]] = defaultdict(list)
    for r in results:
        verdict = classify(r)
        if verdict == "usable":
            by_task[norm(r["task"])].append(r)
        else:
            stats[verdict] += 1
    kept: list[dict[str, Any]] = []
    for answers in by_task.values():
        counts = Counter(norm(r["answer"]) for r in answers)
        winner, votes = counts.most_common(1)[0]  # a tie goes to the answer ranked first
        first = next(r for r in answers if norm(r["answer"]) == winner)
        stats["outvoted"] += len(answers) - votes
        kept.append(forwarded(first, max_chars, f"{votes} of {len(answers)} jobs agree. " + (cut(first["explanation"], max_chars) or "")))
    return cap(kept, stats, max_forwarded), stats


majority_vote_filter = make_filter(vote)
