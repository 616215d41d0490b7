"""Reading a minion's plain-text reply into the same ``JobOutput`` a JSON reply gives.

Tiny models lose answers under grammar-constrained JSON (they fill the fields with
made-up URLs and run to the token limit) but answer plainly in text. A text reply
is read leniently:

- a JSON object with the ``JobOutput`` fields (some models answer JSON unasked) is
  read as such;
- labelled fields (``QUOTE:`` / ``CITATION:`` / ``EVIDENCE:``, ``ANSWER:``,
  ``EXPLANATION:`` / ``REASON:``, with or without Markdown bold, always with a colon)
  are taken as such;
- without labels, the whole reply is the answer (its first paragraph, within reason);
- "NONE", "not found", "the text does not mention ..." and the like, as the whole
  reply or its first sentence, are an abstention: the answer is null.
"""

from __future__ import annotations

import re

from minionflow.contracts.schemas import JobOutput
from minionflow.serving.models import parse_json_reply
from pydantic import ValidationError

_LABEL = re.compile(
    r"^[ \t>*_-]*(?:\*\*|__)?(?P<label>quote|citation|evidence|answer|final answer|explanation|reason)(?:\*\*|__)?"
    r"[ \t]*(?:\*\*|__)?[ \t]*[:\uff1a][ \t]*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
_FIELD = {"quote": "citation", "citation": "citation", "evidence": "citation", "answer": "answer",
          "final answer": "answer", "explanation": "explanation", "reason": "explanation"}

# a reply (or answer) that says the text does not hold the answer
_NOT_FOUND = re.compile(
    r"^\W*(?:none|null|n/?a|nil|unknown|no answer|not found|no information|not (?:mentioned|stated|specified|provided|"
    r"available|given|applicable))\W*$"
    r"|\b(?:(?:does|do|did)\s*(?:not|n't)\s+(?:\w+\s+)?(?:say|mention|state|specify|provide|contain|include|give|list|"
    r"disclose|report|indicate|answer|tell)|(?:is|are|was|were)\s+not\s+(?:explicitly\s+)?(?:mentioned|stated|"
    r"specified|provided|given|found|included|listed)|no\s+(?:information|mention|answer)\s+(?:about|of|on|in|is|was)|"
    r"(?:cannot|can't|can not)\s+(?:be\s+)?(?:determined?|found|answered|find|tell))\b",
    re.IGNORECASE,
)

MAX_ANSWER_CHARS = 600


_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")


def says_not_found(text: str | None) -> bool:
    """The text says that the answer is not there (an abstention): as a whole, or in its
    first sentence. "Northwind closed Duluth. The text does not say why." answers."""
    if text is None or not text.strip():
        return True
    first = _FIRST_SENTENCE.split(text.strip(), maxsplit=1)[0]
    return bool(_NOT_FOUND.search(first))


def _clean(value: str) -> str:
    value = value.strip().strip("*_").strip()
    if len(value) >= 2 and value[0] in "\"'\u201c" and value[-1] in "\"'\u201d":
        value = value[1:-1].strip()
    return value


def parse_text_reply(text: str) -> JobOutput:
    """A plain-text worker reply as a ``JobOutput`` (never raises)."""
    body = text.strip()
    if body.startswith(("{", "```")):
        try:
            return parse_json_reply(body, JobOutput)
        except (ValidationError, ValueError):
            pass
    fields: dict[str, str] = {}
    matches = list(_LABEL.finditer(body))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        key = _FIELD[m.group("label").lower()]
        value = _clean(body[m.end():end])
        if value and key not in fields:
            fields[key] = value
    if not matches:
        first = re.split(r"\n\s*\n", body, maxsplit=1)[0]
        fields["answer"] = _clean(first)
    answer = fields.get("answer")
    if answer is not None and len(answer) > MAX_ANSWER_CHARS:
        answer = answer[:MAX_ANSWER_CHARS].rsplit(" ", 1)[0] + " ..."
    citation = fields.get("citation")
    if citation is not None and says_not_found(citation):
        citation = None
    if says_not_found(answer):
        return JobOutput(citation=None, answer=None, explanation=fields.get("explanation") or (answer or "empty reply"))
    return JobOutput(citation=citation, answer=answer, explanation=fields.get("explanation") or "")
