"""Graph builders, state schemas and run settings: the public API to run a
protocol (``run_minions`` with ``RunSettings.protocol`` / ``.graph``), to build the
standard graphs (``build_minions_graph``, ``build_graph``), and to assemble your own
(``minions_builder(prelude=..., filter_node=...)`` returns a plain ``StateGraph``
over ``MinionsState``; ``retrieval_minions`` and ``majority_vote_minions`` are two
worked examples).

Names are loaded on first use (PEP 562), so node modules can import
``minionflow.graphs.settings`` and ``minionflow.graphs.state`` without pulling in
the graph builders that import the nodes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Node": ".minions",
    "minion_builder": ".minion",
    "local_only_builder": ".baselines",
    "remote_only_builder": ".baselines",
    "build_graph": ".protocols",
    "retrieval_minions": ".variants",
    "majority_vote_minions": ".variants",
    "PROTOCOLS": ".settings",
    "default_settings": ".settings",
    "MinionState": ".state",
    "ReadAllState": ".state",
    "NODE_NAMES": ".minions",
    "build_minions_graph": ".minions",
    "minions_builder": ".minions",
    "RunResult": ".run",
    "run_minions": ".run",
    "open_persistence": ".persistence",
    "sqlite_persistence": ".persistence",
    "postgres_persistence": ".persistence",
    "resume_minions": ".run",
    "fork_minions": ".run",
    "ModelSpec": ".settings",
    "PriceTable": ".settings",
    "RolePrices": ".settings",
    "RunSettings": ".settings",
    "JobInput": ".state",
    "MinionsState": ".state",
}

__all__ = [
    "PROTOCOLS",
    "MinionState",
    "Node",
    "ReadAllState",
    "build_graph",
    "default_settings",
    "local_only_builder",
    "majority_vote_minions",
    "minion_builder",
    "remote_only_builder",
    "retrieval_minions",
    "NODE_NAMES",
    "JobInput",
    "MinionsState",
    "ModelSpec",
    "PriceTable",
    "RolePrices",
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

if TYPE_CHECKING:
    from .baselines import local_only_builder, remote_only_builder
    from .minion import minion_builder
    from .minions import NODE_NAMES, Node, build_minions_graph, minions_builder
    from .persistence import open_persistence, postgres_persistence, sqlite_persistence
    from .protocols import build_graph
    from .run import RunResult, fork_minions, resume_minions, run_minions
    from .settings import PROTOCOLS, ModelSpec, PriceTable, RolePrices, RunSettings, default_settings
    from .state import JobInput, MinionsState, MinionState, ReadAllState
    from .variants import majority_vote_minions, retrieval_minions


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
