"""Graph builders, state schemas and run settings.

Names are loaded on first use (PEP 562), so node modules can import
``minionflow.graphs.settings`` and ``minionflow.graphs.state`` without pulling in
the graph builders that import the nodes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
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
    from .minions import NODE_NAMES, build_minions_graph, minions_builder
    from .persistence import open_persistence, postgres_persistence, sqlite_persistence
    from .run import RunResult, fork_minions, resume_minions, run_minions
    from .settings import ModelSpec, PriceTable, RolePrices, RunSettings
    from .state import JobInput, MinionsState


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
