"""The MinionS graph builder.

    START -> [ingest] -> [prelude ...] -> decompose -> sandboxed_execute -(code failed, attempts left)-> decompose
                                | (one Send per job)
                                v
                       parallel_minion_map x N -> filter -> aggregate -(final)-> END
                                                               | (more info, rounds left)
                                                               v
                                                          retry_round -> decompose
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from minionflow.contracts.errors import TRANSIENT_RETRY
from minionflow.contracts.state import JobInput, MinionsState
from minionflow.nodes.aggregate import make_aggregate, route_after_aggregate
from minionflow.nodes.decompose import make_decompose
from minionflow.nodes.filter import filter_outputs
from minionflow.nodes.models import DefaultModelProvider, ModelProvider
from minionflow.nodes.parallel_minion_map import make_parallel_minion_map
from minionflow.nodes.retry_round import retry_round
from minionflow.nodes.sandboxed_execute import DESTINATIONS, make_sandboxed_execute
from minionflow.sandbox.base import SandboxBackend

from .entry import add_entry, new_builder

Node = Callable[..., dict[str, Any]]  # a function of the state returning an update


def minions_builder(models: ModelProvider | None = None, sandbox: SandboxBackend | None = None, *,
                    prelude: Sequence[tuple[str, Node]] = (), filter_node: Node = filter_outputs,
                    from_request: bool = False) -> StateGraph[Any]:
    """The uncompiled MinionS graph, to compile as it is or to change.

    ``prelude``: (name, node) pairs run in order before the first ``decompose``, e.g.
    ``[("retrieve", make_bm25_prefilter(8))]``. ``filter_node`` replaces the default
    filter (same state in and out), e.g. ``majority_vote_filter``. Anything else:
    add nodes and edges to the returned builder (it is a plain ``StateGraph``).

    It starts from an initial ``MinionsState`` (``nodes.ingest.initial_state``); with
    ``from_request`` it takes a plain-JSON ``RunRequest`` instead and starts with the
    ``ingest`` node (for graphs served to Studio and other LangGraph clients)."""
    models = models or DefaultModelProvider()
    builder = new_builder(MinionsState, from_request)
    first = prelude[0][0] if prelude else "decompose"
    add_entry(builder, first, from_request=from_request, protocol="minions")
    for i, (name, node) in enumerate(prelude):
        builder.add_node(name, node)
        builder.add_edge(name, prelude[i + 1][0] if i + 1 < len(prelude) else "decompose")
    builder.add_node("decompose", make_decompose(models), retry_policy=TRANSIENT_RETRY)
    builder.add_node("sandboxed_execute", make_sandboxed_execute(sandbox), destinations=DESTINATIONS)
    builder.add_node(
        "parallel_minion_map", make_parallel_minion_map(models), input_schema=JobInput, retry_policy=TRANSIENT_RETRY
    )
    builder.add_node("filter", filter_node)
    builder.add_node("aggregate", make_aggregate(models), retry_policy=TRANSIENT_RETRY)
    builder.add_node("retry_round", retry_round)
    builder.add_edge("decompose", "sandboxed_execute")
    builder.add_edge("parallel_minion_map", "filter")
    builder.add_edge("filter", "aggregate")
    builder.add_conditional_edges("aggregate", route_after_aggregate, ["retry_round", END])
    builder.add_edge("retry_round", "decompose")
    return builder


def build_minions_graph(
    models: ModelProvider | None = None,
    sandbox: SandboxBackend | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    store: BaseStore | None = None,
    *,
    from_request: bool = False,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled MinionS graph. ``store`` holds the document and chunk texts."""
    return minions_builder(models, sandbox, from_request=from_request).compile(
        checkpointer=checkpointer, store=store, name="minions")
