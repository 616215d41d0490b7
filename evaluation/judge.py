"""An optional LLM judge (``minionflow eval --judge SPEC``).

The judge reads the question, the acceptable answers and the system's answer, and
says whether the answer is right. Its verdict is recorded beside the deterministic
one, never mixed into it: the deterministic score is what the figures report, the
judge is a second opinion (useful where answers are free text that string rules
read too strictly or too loosely).
"""

from __future__ import annotations

import logging

from langchain_core.messages import HumanMessage, SystemMessage
from minionflow.contracts.settings import ModelSpec
from minionflow.nodes.support.prompts import JUDGE_SYSTEM, JUDGE_USER
from minionflow.serving.models import DefaultModelProvider, ModelProvider
from pydantic import BaseModel, Field

from .suite import SuiteItem

log = logging.getLogger(__name__)

JUDGE_MAX_TOKENS = 300

class JudgeReply(BaseModel):
    correct: bool
    reason: str = Field(description="one short sentence")


class JudgeVerdict(BaseModel):
    """The judge's verdict on one answer (``correct`` is None when the judge failed)."""

    correct: bool | None
    reason: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def reference_text(item: SuiteItem) -> str:
    if item.match == "abstain":
        return "The documents do not answer this question."
    if item.match == "all":
        parts = [p if isinstance(p, str) else " / ".join(p) for p in item.answers]
        return "all of: " + "; ".join(parts)
    return " | ".join(a for a in item.answers if isinstance(a, str))


def judge_answer(spec: ModelSpec, item: SuiteItem, answer: str, models: ModelProvider | None = None) -> JudgeVerdict:
    """Ask the judge model; a failed call is a verdict with ``correct`` None and the error."""
    client = (models or DefaultModelProvider()).client(spec, "remote", JUDGE_MAX_TOKENS)
    messages = [SystemMessage(JUDGE_SYSTEM),
                HumanMessage(JUDGE_USER.format(question=item.question, reference=reference_text(item), answer=answer))]
    try:
        reply = client.structured(JudgeReply, messages)
    except Exception as exc:  # noqa: BLE001 - a judge that cannot be reached leaves the verdict open
        log.warning("judge %s failed on %s: %s", spec.label, item.id, exc)
        return JudgeVerdict(correct=None, reason=f"the judge failed: {type(exc).__name__}: {exc}", model=spec.label)
    prompt = sum(c.usage[0] for c in reply.calls)
    completion = sum(c.usage[1] for c in reply.calls)
    if not isinstance(reply.parsed, JudgeReply):
        return JudgeVerdict(correct=None, reason=f"the judge's reply was unusable: {reply.error}", model=spec.label,
                            prompt_tokens=prompt, completion_tokens=completion)
    return JudgeVerdict(correct=reply.parsed.correct, reason=reply.parsed.reason, model=spec.label,
                        prompt_tokens=prompt, completion_tokens=completion)
