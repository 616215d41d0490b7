"""The baselines as graphs: one model reads everything and answers.

    START -> read_all -> END

``remote-only`` is what MinionS saves against; ``local-only`` is what it adds to.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from minionflow.nodes.models import DefaultModelProvider, ModelProvider, Role
from minionflow.nodes.parallel_minion_map import TRANSIENT_RETRY
from minionflow.nodes.read_all import make_read_all
from minionflow.sandbox.base import SandboxBackend

from .state import ReadAllState


def read_all_builder(role: Role, models: ModelProvider | None = None) -> StateGraph[Any]:
    builder: StateGraph[Any] = StateGraph(ReadAllState)
    builder.add_node("read_all", make_read_all(models or DefaultModelProvider(), role), retry_policy=TRANSIENT_RETRY)
    builder.add_edge(START, "read_all")
    builder.add_edge("read_all", END)
    return builder


def remote_only_builder(models: ModelProvider | None = None, sandbox: SandboxBackend | None = None) -> StateGraph[Any]:
    return read_all_builder("remote", models)


def local_only_builder(models: ModelProvider | None = None, sandbox: SandboxBackend | None = None) -> StateGraph[Any]:
    return read_all_builder("local", models)
