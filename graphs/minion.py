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
from minionflow.contracts.protocol import Protocol
from minionflow.contracts.state import MinionState
from minionflow.nodes.minion_local import minion_local
from minionflow.nodes.minion_remote import minion_remote, route_after_remote

from .entry import add_entry, new_builder

MIN_TURNS = 2  # a question, then the answer


def minion_builder(*, from_request: bool = False) -> StateGraph[Any]:
    """The uncompiled Minion graph."""
    builder = new_builder(MinionState, from_request)
    builder.add_node("minion_remote", minion_remote, retry_policy=TRANSIENT_RETRY)
    builder.add_node("minion_local", minion_local, retry_policy=TRANSIENT_RETRY)
    add_entry(builder, "minion_remote", from_request=from_request, protocol=MINION)
    builder.add_conditional_edges("minion_remote", route_after_remote, ["minion_local", END])
    builder.add_edge("minion_local", "minion_remote")
    return builder


MINION = Protocol(
    name="minion",
    description="Minion: the local model holds the whole document, the remote model asks it questions until it can answer",
    state=MinionState, build=minion_builder, calls=frozenset({"remote", "local"}), reads_whole="local",
    min_rounds=MIN_TURNS, start={"round": 1},
)
