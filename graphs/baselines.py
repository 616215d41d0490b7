"""The baselines as graphs: one model reads everything and answers.

    START -> read_all -> END

``remote-only`` is what MinionS saves against; ``local-only`` is what it adds to.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, StateGraph
from minionflow.contracts.errors import TRANSIENT_RETRY
from minionflow.contracts.protocol import Protocol
from minionflow.contracts.state import ReadAllState
from minionflow.nodes.read_all import read_all_local, read_all_remote

from .entry import add_entry, new_builder


def _read_all_builder(protocol: Protocol, step: Any, from_request: bool) -> StateGraph[Any]:
    builder = new_builder(ReadAllState, from_request)
    builder.add_node("read_all", step, retry_policy=TRANSIENT_RETRY)
    add_entry(builder, "read_all", from_request=from_request, protocol=protocol)
    builder.add_edge("read_all", END)
    return builder


def remote_only_builder(*, from_request: bool = False) -> StateGraph[Any]:
    """The remote model reads every document and answers."""
    return _read_all_builder(REMOTE_ONLY, read_all_remote, from_request)


def local_only_builder(*, from_request: bool = False) -> StateGraph[Any]:
    """The local model reads every document and answers."""
    return _read_all_builder(LOCAL_ONLY, read_all_local, from_request)


REMOTE_ONLY = Protocol(
    name="remote-only", description="a baseline: the remote model reads every document and answers (what MinionS saves "
    "against)", state=ReadAllState, build=remote_only_builder, calls=frozenset({"remote"}), reads_whole="remote")
LOCAL_ONLY = Protocol(
    name="local-only", description="a baseline: the local model reads every document and answers",
    state=ReadAllState, build=local_only_builder, calls=frozenset({"local"}), reads_whole="local")
