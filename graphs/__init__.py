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
    "sqlite_persistence": ".run",
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
    "sqlite_persistence",
]

if TYPE_CHECKING:
    from .minions import NODE_NAMES, build_minions_graph, minions_builder
    from .run import RunResult, run_minions, sqlite_persistence
    from .settings import ModelSpec, PriceTable, RolePrices, RunSettings
    from .state import JobInput, MinionsState


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
