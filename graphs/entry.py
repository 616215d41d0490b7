"""How a graph starts: from an initial state (``run_minions`` builds it), or from a
plain-JSON ``RunRequest`` through the ``ingest`` node (graphs served to Studio and
other LangGraph clients)."""

from __future__ import annotations

from typing import Any

from langgraph.graph import START, StateGraph
from minionflow.nodes.ingest import RunRequest, make_ingest
from minionflow.nodes.support.context import RunContext


def new_builder(state: type[Any], from_request: bool) -> StateGraph[Any]:
    """A graph over ``state`` whose steps get the run's ``RunContext`` (``context_schema``)."""
    return StateGraph(state, context_schema=RunContext, input_schema=RunRequest if from_request else None)


def add_entry(builder: StateGraph[Any], first: str, *, from_request: bool, protocol: str) -> None:
    """Edges from START to ``first``, through ``ingest`` for a served graph."""
    if from_request:
        builder.add_node("ingest", make_ingest(protocol), input_schema=RunRequest)
        builder.add_edge(START, "ingest")
        builder.add_edge("ingest", first)
    else:
        builder.add_edge(START, first)
