"""Small helpers shared by the node modules."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from langgraph.config import get_stream_writer

from minionflow.graphs.settings import RunSettings

log = logging.getLogger(__name__)


def settings_of(state: Mapping[str, Any]) -> RunSettings:
    """The run's settings, validated (they live in state so a resumed run keeps them)."""
    return RunSettings.model_validate(state["settings"])


def emit(event: dict[str, Any]) -> None:
    """Send a progress event on the ``custom`` stream; a no-op outside a graph run."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(event)
