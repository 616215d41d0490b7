"""Pydantic schemas of what models must return (validated on every reply)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class JobOutput(BaseModel):
    """A minion's reply to one job."""

    explanation: str = Field(description="how the text supports the answer, or why it does not")
    citation: str | None = Field(None, description="a short quote from the text")
    answer: str | None = Field(None, description="the answer, or null when the text does not contain it")


class AggregateDecision(BaseModel):
    """The supervisor's verdict after reading the minions' answers."""

    decision: Literal["provide_final_answer", "request_additional_info"]
    answer: str = ""
    explanation: str = ""
    feedback: str | None = None
    scratchpad: str | None = None
