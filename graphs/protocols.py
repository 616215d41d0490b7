"""Which graph a run uses: one of the protocols, or a custom graph named by
``module:attr`` (``minionflow run --graph``). Both are recorded in the run's
settings, so resume, fork, show and Studio rebuild the same graph.

A custom graph is a ``StateGraph`` over ``MinionsState`` (uncompiled: minionflow
compiles it with the run's checkpointer and store, and runs it with the run's
``RunContext``), or a function of no arguments that builds one, e.g.::

    def build():
        return minions_builder(filter_node=majority_vote_filter)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from minionflow.contracts.errors import BadInput
from minionflow.contracts.settings import PROTOCOLS, RunSettings

from .baselines import local_only_builder, remote_only_builder
from .minion import minion_builder
from .minions import minions_builder

Builder = Callable[[], StateGraph[Any]]

BUILDERS: dict[str, Builder] = {
    "minions": minions_builder,
    "minion": minion_builder,
    "remote-only": remote_only_builder,
    "local-only": local_only_builder,
}
REQUIRED_KEYS = ("settings", "task", "documents", "final", "usage")


def load_custom_graph(spec: str) -> Builder:
    """The builder that ``module:attr`` names, checked (BadInput if it is not one)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadInput(f"--graph {spec!r}: write it as module:attr (e.g. my_graphs:build)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(f"--graph {spec!r}: cannot import {module_name} ({exc})") from None
    target = getattr(module, attr, None)
    if target is None:
        raise BadInput(f"--graph {spec!r}: {module_name} has no attribute {attr!r}")
    if isinstance(target, CompiledStateGraph):
        raise BadInput(f"--graph {spec!r} is a compiled graph; give the StateGraph (or a function that builds "
                       "it) so minionflow can compile it with its checkpointer and store")
    if isinstance(target, StateGraph):
        graph = target
        return lambda: graph
    if not callable(target):
        raise BadInput(f"--graph {spec!r} is a {type(target).__name__}, not a StateGraph or a function that builds one")
    required = [p for p in inspect.signature(target).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise BadInput(f"--graph {spec!r}: a function that builds the graph takes no arguments (it takes "
                       f"{', '.join(p.name for p in required)}); its steps get the models and the sandbox from the "
                       "run's context")

    def build() -> StateGraph[Any]:
        built = target()
        if not isinstance(built, StateGraph):
            raise BadInput(f"--graph {spec!r} returned a {type(built).__name__}, not a StateGraph")
        return built

    return build


def check_graph(spec: str, builder: StateGraph[Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in builder.channels]
    if missing:
        raise BadInput(f"--graph {spec!r}: its state lacks {', '.join(missing)}; build it on MinionsState "
                       "(minionflow.graphs.MinionsState) or from minions_builder()")


def builder_for(settings: RunSettings) -> StateGraph[Any]:
    if settings.graph:
        builder = load_custom_graph(settings.graph)()
        check_graph(settings.graph, builder)
        return builder
    if settings.protocol not in BUILDERS:
        raise BadInput(f"unknown protocol {settings.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return BUILDERS[settings.protocol]()


def build_graph(settings: RunSettings, checkpointer: BaseCheckpointSaver[Any] | None = None,
                store: BaseStore | None = None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled graph a run with these settings uses (run it with a ``RunContext``)."""
    name = settings.graph or settings.protocol
    return builder_for(settings).compile(checkpointer=checkpointer, store=store, name=name)


def thread_settings(saver: BaseCheckpointSaver[Any], thread_id: str, checkpoint_id: str | None = None) -> RunSettings | None:
    """A thread's settings, read from its latest (or the given) checkpoint without
    knowing its graph yet; None for an unknown thread."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    if checkpoint_id:
        config["configurable"]["checkpoint_id"] = checkpoint_id
    saved = saver.get_tuple(config)  # type: ignore[arg-type]
    if saved is None:
        return None
    settings = saved.checkpoint["channel_values"].get("settings")
    return RunSettings.model_validate(settings) if settings else None
