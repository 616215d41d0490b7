"""The baselines as graphs: one model reads everything and answers.

    START -> read_all -> END

``remote-only`` is what MinionS saves against; ``local-only`` is what it adds to.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, StateGraph
from minionflow.contracts.errors import TRANSIENT_RETRY
from minionflow.contracts.state import ReadAllState
from minionflow.nodes.models import DefaultModelProvider, ModelProvider, Role
from minionflow.nodes.read_all import make_read_all
from minionflow.sandbox.base import SandboxBackend

from .entry import add_entry, new_builder


def read_all_builder(role: Role, models: ModelProvider | None = None, *, from_request: bool = False) -> StateGraph[Any]:
    builder = new_builder(ReadAllState, from_request)
    builder.add_node("read_all", make_read_all(models or DefaultModelProvider(), role), retry_policy=TRANSIENT_RETRY)
    add_entry(builder, "read_all", from_request=from_request, protocol=f"{role}-only")
    builder.add_edge("read_all", END)
    return builder


def remote_only_builder(models: ModelProvider | None = None, sandbox: SandboxBackend | None = None, *,
                        from_request: bool = False) -> StateGraph[Any]:
    return read_all_builder("remote", models, from_request=from_request)


def local_only_builder(models: ModelProvider | None = None, sandbox: SandboxBackend | None = None, *,
                       from_request: bool = False) -> StateGraph[Any]:
    return read_all_builder("local", models, from_request=from_request)
