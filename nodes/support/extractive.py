"""The extractive fallback: when the supervisor is too weak to aggregate, answer with
the best-supported grounded minion answer, and its quote.

A supervisor "fails to aggregate" when its reply is unusable, or when its final
answer ignores every grounded minion answer about the question (one whose quote
shares a word with the question): it shares no word with any of them beyond the
question's own words (a supervisor that says the documents do not answer is taken
at its word). Each grounded output about the question is then scored by

- its **relevance**: the IDF-weighted share of the question's words in its quote,
  the document's own words (``nodes.support.grounding.relevance``, over the candidates
  themselves),
- its **support**: how much of its answer one passage of its chunk holds,
- **agreement**: how many other grounded outputs give the same answer,

and the best one becomes the answer, carrying its quote. When no minion found a
grounded answer in any round, the answer says that the documents did not yield
one. The notes say plainly that this fallback was used.

A supervisor that does aggregate, by taking one minion's answer as it is, gets that
answer's quote too (``adopted_output``): every answer that rests on one passage of
the documents carries it (``FinalAnswer.quote``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .grounding import agreement, content_terms, relevance
from .questions import question_parts
from .replies import says_not_found

NO_EVIDENCE_ANSWER = "The documents do not appear to answer this: no minion found a passage that supports an answer."

# how much support and agreement weigh next to relevance (each term is 0-1)
SUPPORT_WEIGHT = 0.5
AGREEMENT_WEIGHT = 0.5
AGREEMENT_CAP = 3  # agreeing outputs beyond this add nothing


class Extracted(BaseModel):
    answer: str  # the minion's answer
    quote: str | None  # the passage of its chunk that supports it
    job_id: str | None
    parts: list[str | None] = []  # the job of each part's answer, when the answer is made of a compound question's parts
    score: float
    explanation: str


def about_the_question(question: str, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The outputs whose quote (the document's words) shares a word with the question:
    a sentence that shares none ("The board's audit committee reviewed the
    methodology", for "Who is the CFO?") is not an answer to it, however well the
    minion copied it."""
    asked = set(content_terms(question))
    return [o for o in outputs if asked & set(content_terms(o.get("citation") or o.get("answer") or ""))]


def ignores_grounded(answer: str | None, question: str, grounded: list[dict[str, Any]]) -> bool:
    """True when a supervisor's answer takes nothing from the grounded outputs about
    the question: it shares none of its own words (the question's excluded) with any
    such output's answer or quote. Saying that the documents do not answer is not
    ignoring them."""
    if answer is None or not answer.strip():
        return True
    if says_not_found(answer):
        return False
    own = set(content_terms(answer)) - set(content_terms(question))
    if not own:
        return True  # it restates the question
    for output in about_the_question(question, grounded):
        if own & set(content_terms(f"{output.get('answer') or ''} {output.get('citation') or ''}")):
            return False
    return True


def adopted_output(answer: str, outputs: list[dict[str, Any]], min_overlap: float = 0.6) -> dict[str, Any] | None:
    """The grounded output whose answer the supervisor's answer repeats (their content
    words overlap by ``min_overlap`` or more, Jaccard), if any."""
    own = set(content_terms(answer))
    best, best_overlap = None, 0.0
    for output in outputs:
        theirs = set(content_terms(output.get("answer") or ""))
        if own and theirs:
            overlap = len(own & theirs) / len(own | theirs)
            if overlap > best_overlap:
                best, best_overlap = output, overlap
    return best if best_overlap >= min_overlap else None


def scores(question: str, candidates: list[dict[str, Any]]) -> list[float]:
    texts = [c.get("citation") or c.get("answer") or "" for c in candidates]
    agree = agreement([c.get("answer") or "" for c in candidates])
    return [
        rel + SUPPORT_WEIGHT * float(c.get("support") or 0.0) + AGREEMENT_WEIGHT * min(a, AGREEMENT_CAP) / AGREEMENT_CAP
        for c, rel, a in zip(candidates, relevance(question, texts), agree, strict=True)
    ]


def _best(question: str, usable: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
    scored = scores(question, usable)
    best_index = max(range(len(usable)), key=lambda i: (scored[i], -i))
    return usable[best_index], scored[best_index]


def extract(question: str, candidates: list[dict[str, Any]]) -> Extracted:
    """The best grounded output about the question as an answer (or the no-evidence answer).
    When the outputs answer two or more parts of a compound question, each asked as a task
    of its own (the built-in plan's ``question_parts``), the answer is the best output of
    each part, in the question's order."""
    usable = [c for c in about_the_question(question, candidates) if c.get("answer")]
    if not usable:
        return Extracted(answer=NO_EVIDENCE_ANSWER, quote=None, job_id=None, score=0.0,
                         explanation="No minion gave an answer its chunk supports.")
    parts = [p for p in question_parts(question)
             if any(c.get("task") == p for c in usable)]
    if len(parts) >= 2:
        chosen = [_best(part, [c for c in usable if c.get("task") == part]) for part in parts]
        answers = list(dict.fromkeys(str(c["answer"]).strip() for c, _ in chosen))
        top, top_score = max(chosen, key=lambda pair: pair[1])
        jobs = [c.get("job_id") for c, _ in chosen]
        return Extracted(
            answer=" ".join(a if a.endswith((".", "!", "?")) else a + "." for a in answers), quote=top.get("citation"),
            job_id=top.get("job_id"), parts=jobs, score=round(top_score, 3),
            explanation=(f"Extracted from minion jobs {', '.join(map(str, jobs))}: for each of "
                         f"the question's {len(parts)} parts, the grounded answer whose quote is most relevant to it, "
                         f"best supported by its chunk and most agreed with."),
        )
    best, score = _best(question, usable)
    return Extracted(
        answer=str(best["answer"]).strip(), quote=best.get("citation"), job_id=best.get("job_id"), score=round(score, 3),
        explanation=(f"Extracted from minion job {best.get('job_id')}: of {len(usable)} grounded answers, the one whose "
                     f"quote is most relevant to the question, best supported by its chunk and most agreed with "
                     f"(score {score:.2f})."),
    )
