"""The Minion (singular) chat protocol graph.

    START -> minion_remote -(answer, or last turn)-> END
                  ^      | (a question)
                  |      v
                  minion_local

The local model holds the whole document; the remote model never sees it and asks
questions until it answers (``{decision, answer | message}``), the last turn forced.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, StateGraph
from minionflow.contracts.errors import TRANSIENT_RETRY
from minionflow.contracts.state import MinionState
from minionflow.nodes.minion_local import make_minion_local
from minionflow.nodes.minion_remote import make_minion_remote, route_after_remote
from minionflow.nodes.models import DefaultModelProvider, ModelProvider
from minionflow.sandbox.base import SandboxBackend

from .entry import add_entry, new_builder


def minion_builder(models: ModelProvider | None = None, sandbox: SandboxBackend | None = None, *,
                   from_request: bool = False) -> StateGraph[Any]:
    """The uncompiled Minion graph (``sandbox`` is unused: no code runs)."""
    models = models or DefaultModelProvider()
    builder = new_builder(MinionState, from_request)
    builder.add_node("minion_remote", make_minion_remote(models), retry_policy=TRANSIENT_RETRY)
    builder.add_node("minion_local", make_minion_local(models), retry_policy=TRANSIENT_RETRY)
    add_entry(builder, "minion_remote", from_request=from_request, protocol="minion")
    builder.add_conditional_edges("minion_remote", route_after_remote, ["minion_local", END])
    builder.add_edge("minion_local", "minion_remote")
    return builder
