"""The parts of a compound question, for the built-in plan's extra tasks.

"Which code warns that the filter is clogged, and how often should the filter be
replaced?" asks two things, and a small local model given both often answers one and
restates the other. MinionS's answer is more tasks per round (the paper's section 6): the
built-in plan asks the whole question and its parts over every chunk
(``settings.tasks_per_round`` caps how many), and the extractive answer gives each part
its best grounded answer. A part is split off at ", and" (or "and") followed by a
question word; a part of fewer than ``MIN_PART_WORDS`` words ("and why?", "and in what
year?") cannot stand alone and stays with the question. Only English questions are split;
anything else is one task. On the bundled suite's 9 questions it splits, the embedded
model in both roles got 2 right with or without the parts (evals/README.md), so the
embedded supervisor's default stays one task."""

from __future__ import annotations

import re

MIN_PART_WORDS = 4

_QUESTION_WORD = r"(?:what|which|who|whom|whose|when|where|why|how|(?:in|at|on|for|to|by|from|with)\s+(?:what|which|whom))"
_SPLIT = re.compile(rf"\s*[,;]?\s+and\s+(?={_QUESTION_WORD}\b)", re.IGNORECASE)


def _as_question(text: str) -> str:
    text = text.strip().rstrip("?.!,; ").strip()
    return text[:1].upper() + text[1:] + "?" if text else ""


def question_parts(question: str) -> list[str]:
    """The parts of ``question`` each asked on its own (``[]`` when it asks one thing)."""
    pieces = [p for p in _SPLIT.split(question.strip()) if p and p.strip()]
    if len(pieces) < 2:
        return []
    parts: list[str] = []
    for piece in pieces:
        if parts and len(piece.split()) < MIN_PART_WORDS:
            return []  # "..., and why?": the part needs the rest of the question
        parts.append(_as_question(piece))
    return parts
