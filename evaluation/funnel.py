"""Where a right answer was lost: the loss funnel of one run.

A MinionS run passes the expected answer from stage to stage: the text of a job, a
minion's answer, the grounding check, what was forwarded to the supervisor, the final
answer, the matcher. For a question with an expected answer, ``funnel`` says at each
stage whether the answer was still there, and ``lost_at`` names the first stage where it
was not: the place to look first when tuning chunking, the worker prompt, grounding,
ranking or aggregation.

| stage | the expected answer is there when |
|---|---|
| ``job_text`` | the text of the round's jobs holds it (else: chunking, job design, retrieval lost it) |
| ``minion_answer`` | a minion's answer, its quote or the passage its answer rests on holds it (else: the local model did not find it) |
| ``grounded`` | the same of a grounded output (else: the grounding check dropped it) |
| ``forwarded`` | an output forwarded to the supervisor holds it (else: ranking or the cap) |
| ``final_answer`` | the final answer holds it (else: aggregation, or the extractive choice) |
| ``matched`` | the matcher accepts the final answer (else: the answer's form) |

"Holds" is the matcher's own rule read leniently (``holds``): an ``exact`` answer is
looked for as ``contains``; a ``numeric`` one as a number equal at the written
precision anywhere in the text; an ``all`` answer needs each part somewhere in the
stage's texts together (a multi-section answer lives in two chunks). A stage the run
has no part in (a protocol without minion jobs: remote-only, local-only, Minion) is
None, and the funnel starts at the final answer. Unanswerable questions (``abstain``) and
unscored ones have no funnel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from langgraph.store.base import BaseStore
from minionflow.graphs.threads import ThreadView
from minionflow.nodes.support.outputs import is_abstention
from minionflow.storage.store import get_text
from pydantic import BaseModel

from .matchers import contains, is_correct, numeric
from .suite import SuiteItem

Stage = Literal["job_text", "minion_answer", "grounded", "forwarded", "final_answer", "matched"]
STAGES: tuple[Stage, ...] = ("job_text", "minion_answer", "grounded", "forwarded", "final_answer", "matched")
MINION_STAGES: tuple[Stage, ...] = STAGES[:4]

# what a loss at each stage means, for tables and reports
LOST_AT: dict[str, str] = {
    "job_text": "no job's text held it (chunking, job design, retrieval)",
    "minion_answer": "a job's text held it, no minion answered or quoted it",
    "grounded": "a minion answered or quoted it, grounding dropped it",
    "forwarded": "grounded, not forwarded (ranking, cap)",
    "final_answer": "forwarded, the final answer does not hold it (aggregation, extractive choice)",
    "matched": "the final answer holds it, the matcher rejected its form",
}
SHORT: dict[str, str] = {"job_text": "job text", "minion_answer": "minion", "grounded": "grounding",
                         "forwarded": "forwarding", "final_answer": "final answer", "matched": "matcher"}


class Funnel(BaseModel):
    """Whether the expected answer reached each stage (None: the run has no such stage),
    and the first stage it did not reach (None: the answer is right)."""

    held: dict[str, bool | None]
    lost_at: Stage | None

    @property
    def right(self) -> bool:
        return self.lost_at is None


def _alternatives(answer: str | list[str]) -> list[str]:
    return [answer] if isinstance(answer, str) else list(answer)


def holds(item: SuiteItem, texts: Sequence[str]) -> bool:
    """Whether ``texts`` together hold the item's expected answer (the matcher's rule,
    read leniently: see the module's docstring)."""
    texts = [t for t in texts if t]
    if not texts:
        return False
    if item.match == "all":
        return all(any(contains(t, alt) for t in texts for alt in _alternatives(part)) for part in item.answers)
    candidates = [a for answer in item.answers for a in _alternatives(answer)]
    if item.match == "numeric":
        return any(numeric(t, a, item.tolerance) for t in texts for a in candidates)
    return any(contains(t, a) for t in texts for a in candidates)


def has_funnel(item: SuiteItem) -> bool:
    """A question has a funnel when it is scored and the documents answer it."""
    return item.scored and item.match != "abstain"


def _given(result: dict[str, Any]) -> tuple[str, str, str]:
    return result["answer"], result.get("citation") or "", (result.get("grounding") or {}).get("evidence") or ""


def stage_texts(view: ThreadView, store: BaseStore) -> dict[Stage, list[str]] | None:
    """The texts of a run's minion stages: every job's chunk; what the minions gave (not
    abstentions: answer, quote and evidence, ``_given``); what the grounded ones gave; what
    was forwarded (answers and the evidence read as their quotes); None for a run without
    minion jobs."""
    if not view.rounds:  # remote-only, local-only, Minion: no minion jobs (a MinionS round with none has empty stages)
        return None
    jobs = [job for r in view.rounds for job in r.jobs]
    refs = list(dict.fromkeys(job["chunk_ref"] for job in jobs))
    answered = [x for r in view.rounds for x in r.results
                if x.get("status") == "ok" and x.get("answer") and not is_abstention(x["answer"])]
    grounded = [x for x in answered if (x.get("grounding") or {}).get("grounded")]
    return {
        "job_text": [get_text(store, ref) for ref in refs],
        # what a minion gives: its answer, its quote, and the passage of its chunk its answer rests
        # on (the grounding's evidence: what the supervisor reads as its quote, what the
        # extractive answer is made of)
        "minion_answer": [t for x in answered for t in _given(x)],
        "grounded": [t for x in grounded for t in _given(x)],
        "forwarded": [t for r in view.rounds for k in r.kept for t in (k.get("answer") or "", k.get("citation") or "")],
    }


def funnel(item: SuiteItem, answer: str | None, quote: str | None, texts: dict[Stage, list[str]] | None) -> Funnel | None:
    """The funnel of one answered run (``texts``: ``stage_texts``, None without minion
    jobs); None for a question without one (``has_funnel``)."""
    if not has_funnel(item):
        return None
    held: dict[str, bool | None] = {stage: None for stage in STAGES}
    if texts is not None:
        for stage in MINION_STAGES:
            held[stage] = holds(item, texts[stage])
    # the quote may complete an "all" answer once the answer holds a part (as the matcher reads
    # it), never be another's
    if item.match == "all":
        in_answer = any(contains(answer or "", alt) for part in item.answers for alt in _alternatives(part))
        held["final_answer"] = in_answer and holds(item, [answer or "", quote or ""])
    else:
        held["final_answer"] = holds(item, [answer or ""])
    right = bool(is_correct(item, answer, quote))
    held["matched"] = right
    lost = None if right else next(stage for stage in STAGES if held[stage] is False)
    return Funnel(held=held, lost_at=lost)


_A_NUMBER = re.compile(r"\s*[-$€£¥]?\s*\d[\d,]*(?:\.\d+)?\s*(?:%|percent|thousand|million|billion|bn|mn)?\s*",
                       re.IGNORECASE)


def expected_item(expected: Sequence[str], question: str = "?") -> SuiteItem:
    """A question of one's own with the answer expected of it (``minionflow show --expect``):
    one text is looked for as it is written (a number as a number, at the precision it is
    written with); several are the parts of one answer, each needed."""
    parts = [e.strip() for e in expected if e.strip()]
    if not parts:
        raise ValueError("--expect: give the answer you expected")
    if len(parts) > 1:
        return SuiteItem(id="expected", documents=["-"], question=question, answers=list(parts), match="all")
    match = "numeric" if _A_NUMBER.fullmatch(parts[0]) else "contains"
    return SuiteItem(id="expected", documents=["-"], question=question, answers=parts, match=match)


def thread_funnel(item: SuiteItem, view: ThreadView, store: BaseStore) -> Funnel | None:
    """The funnel of a finished thread (its final answer and quote); None when the
    question has none or the thread has no final answer."""
    if not has_funnel(item):
        return None
    final: dict[str, Any] | None = view.final
    if final is None:
        return None
    return funnel(item, final.get("answer"), final.get("quote"), stage_texts(view, store))


__all__ = ["LOST_AT", "MINION_STAGES", "SHORT", "STAGES", "Funnel", "Stage", "expected_item", "funnel", "has_funnel", "holds",
           "stage_texts", "thread_funnel"]
