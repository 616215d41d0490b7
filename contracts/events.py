"""Progress events: what a step tells whoever watches the run (the CLI's progress line,
Studio, any LangGraph client), on LangGraph's ``custom`` stream."""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer


def tokens_of(records: list[Any], role: str) -> int:
    """Prompt and completion tokens of one role's calls among ``records``."""
    return sum(r["prompt_tokens"] + r["completion_tokens"] for r in records if r["role"] == role)


def emit_usage(records: list[Any]) -> None:
    """A progress event with the tokens of the calls just made (for "tokens so far")."""
    for role in ("remote", "local"):
        tokens = tokens_of(records, role)
        if tokens:
            emit({"type": "usage", "role": role, "tokens": tokens})


def emit(event: dict[str, Any]) -> None:
    """Send a progress event on the ``custom`` stream; a no-op outside a graph run."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(event)
