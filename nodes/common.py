"""Small helpers shared by the node modules."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from langgraph.config import get_stream_writer
from langgraph.store.base import BaseStore

from minionflow.graphs.settings import RunSettings
from minionflow.graphs.state import JobBatch

from .store import get_json

log = logging.getLogger(__name__)

_settings_by_ref: dict[str, RunSettings] = {}


def settings_of(state: Mapping[str, Any]) -> RunSettings:
    """The run's settings, validated (they live in state so a resumed run keeps them)."""
    return RunSettings.model_validate(state["settings"])


def settings_from_ref(store: BaseStore, ref: str) -> RunSettings:
    """Settings by content hash, for Send tasks; immutable, so parsed once per process."""
    settings = _settings_by_ref.get(ref)
    if settings is None:
        if len(_settings_by_ref) > 256:
            _settings_by_ref.clear()
        settings = _settings_by_ref[ref] = RunSettings.model_validate(get_json(store, ref))
    return settings


_batches_by_ref: dict[str, JobBatch] = {}


def batch_from_ref(store: BaseStore, ref: str) -> JobBatch:
    """A round's job batch by content hash, parsed once per process for all its jobs."""
    batch = _batches_by_ref.get(ref)
    if batch is None:
        if len(_batches_by_ref) > 16:
            _batches_by_ref.clear()
        batch = _batches_by_ref[ref] = get_json(store, ref)
    return batch


def emit(event: dict[str, Any]) -> None:
    """Send a progress event on the ``custom`` stream; a no-op outside a graph run."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(event)
