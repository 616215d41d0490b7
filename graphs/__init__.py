"""Graph builders, state schemas and run settings: the public API to run a
protocol (``run_minions`` with ``RunSettings.protocol`` / ``.graph``), to build the
standard graphs (``build_minions_graph``, ``build_graph``), and to assemble your own
(``minions_builder(prelude=..., filter_node=..., after=...)`` returns a plain
``StateGraph`` over ``MinionsState`` whose ``round`` node is the round subgraph,
``round_builder``; ``retrieval_minions`` and ``majority_vote_minions`` are two
worked examples). ``RunSettings(graph=...)`` takes such a graph as a ``module:attr`` name or,
in-process, as the object itself. docs/extending.md is the guide, with code that runs.

The settings and state schemas live in ``minionflow.contracts``, the layer below
the nodes, and are re-exported here.
"""

from __future__ import annotations

from minionflow.contracts.protocol import Protocol
from minionflow.contracts.settings import ModelSpec, PriceTable, RolePrices, RunSettings, default_settings
from minionflow.contracts.state import JobInput, MinionsState, MinionState, ReadAllState, RoundState, RunState
from minionflow.nodes.support.context import RunContext
from minionflow.storage.persistence import open_persistence, postgres_persistence, sqlite_persistence

from .baselines import local_only_builder, remote_only_builder
from .entry import add_entry, new_builder
from .minion import minion_builder
from .minions import INSERT_AFTER, Node, build_minions_graph, minions_builder, round_builder
from .protocols import all_protocols, build_graph, get_protocol, register
from .run import RunResult, fork_minions, resume_minions, run_minions
from .variants import majority_vote_minions, reranked_minions, retrieval_minions

__all__ = [
    "INSERT_AFTER",
    "add_entry",
    "new_builder",
    "Protocol",
    "get_protocol",
    "all_protocols",
    "register",
    "RoundState",
    "RunState",
    "round_builder",
    "MinionState",
    "Node",
    "ReadAllState",
    "build_graph",
    "default_settings",
    "local_only_builder",
    "majority_vote_minions",
    "minion_builder",
    "remote_only_builder",
    "reranked_minions",
    "retrieval_minions",
    "JobInput",
    "MinionsState",
    "ModelSpec",
    "PriceTable",
    "RolePrices",
    "RunContext",
    "RunResult",
    "RunSettings",
    "build_minions_graph",
    "minions_builder",
    "run_minions",
    "open_persistence",
    "postgres_persistence",
    "resume_minions",
    "fork_minions",
    "sqlite_persistence",
]
