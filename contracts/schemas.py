"""Pydantic schemas of what models must return (validated on every reply).

Every field is required (nullable where a value may be missing): servers that
constrain output by grammar (llama.cpp) let a model skip optional fields, and a
small model then skips exactly the answer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class JobOutput(BaseModel):
    """A minion's reply to one job. The quote comes first, so that a small model
    grounds its answer in the text before it writes it."""

    citation: str | None = Field(description="the sentence of the text most relevant to the task, copied exactly; null if none")
    answer: str | None = Field(description="the answer to the task from the text, or null when the text does not contain it")
    explanation: str = Field(description="how the text supports the answer, or why it does not")


class AggregateDecision(BaseModel):
    """The supervisor's verdict after reading the minions' answers."""

    decision: Literal["provide_final_answer", "request_additional_info"]
    answer: str
    explanation: str
    feedback: str | None
    scratchpad: str | None


class MinionTurn(BaseModel):
    """The supervisor's turn in the Minion chat: ask the local model, or answer."""

    decision: Literal["provide_final_answer", "request_additional_info"]
    answer: str | None = Field(description="the final answer (with provide_final_answer), else null")
    message: str | None = Field(description="the question for the local model (with request_additional_info), else null")


class Approval(BaseModel):
    """The reviewer's answer to an approval interrupt (``Command(resume=...)``)."""

    action: Literal["accept", "edit", "reject"]
    code: str | None = None
    reason: str = ""
