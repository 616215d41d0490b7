"""How a graph starts: from an initial state (``run_minions`` builds it), or from a
plain-JSON ``RunRequest`` through the ``ingest`` node (graphs served to Studio and
other LangGraph clients). A protocol's builder, the built-in ones' and yours, makes its
``StateGraph`` with ``new_builder`` and joins it to its first step with ``add_entry``."""

from __future__ import annotations

from typing import Any

from langgraph.graph import START, StateGraph
from minionflow.contracts.protocol import Protocol
from minionflow.nodes.ingest import RunRequest, make_ingest
from minionflow.nodes.support.context import RunContext


def new_builder(state: type[Any], from_request: bool) -> StateGraph[Any]:
    """A graph over ``state`` whose steps get the run's ``RunContext`` (``context_schema``)."""
    return StateGraph(state, context_schema=RunContext, input_schema=RunRequest if from_request else None)


def add_entry(builder: StateGraph[Any], first: str, *, from_request: bool, protocol: Protocol) -> None:
    """Edges from START to ``first``, through ``ingest`` for a served graph of ``protocol``."""
    if from_request:
        builder.add_node("ingest", make_ingest(protocol), input_schema=RunRequest)
        builder.add_edge(START, "ingest")
        builder.add_edge("ingest", first)
    else:
        builder.add_edge(START, first)
