"""Graph builders, state schemas and run settings."""

from .minions import NODE_NAMES, build_minions_graph, minions_builder
from .run import RunResult, run_minions, sqlite_persistence
from .settings import ModelSpec, PriceTable, RolePrices, RunSettings
from .state import JobInput, MinionsState

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
