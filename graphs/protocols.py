"""Which graph a run uses: one of the protocols, or a custom graph named by
``module:attr`` (``minionflow run --graph``) or given from Python as the object itself
(``RunSettings(graph=builder)``, recorded by name: ``contracts.custom_graph``). Both are
recorded in the run's settings, so resume, fork, show and Studio rebuild the same graph (a
graph object's thread goes on only in the process that started it).

The protocols are registered here, in one place that the CLI, Studio, ingest, the run,
eval and the report look up (``all_protocols()``, ``get_protocol(name)``): the four built in
(``MINIONS``, ``MINION``, ``REMOTE_ONLY``, ``LOCAL_ONLY``, each defined beside its graph),
every ``Protocol`` an installed package names under the ``minionflow.protocols`` entry
point, and any ``register(protocol)`` adds in the process.

A custom graph is a ``StateGraph`` over ``MinionsState`` (minionflow compiles it with the
run's checkpointer and store, and runs it with the run's ``RunContext``; a compiled graph is
compiled again from its builder), or a function of no arguments that builds one, e.g.::

    def build():
        return minions_builder(filter_node=majority_vote_filter)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from minionflow.contracts.custom_graph import in_process_graph, is_in_process
from minionflow.contracts.errors import BadInput
from minionflow.contracts.protocol import Protocol
from minionflow.contracts.settings import RunSettings, record_min_rounds

from .baselines import LOCAL_ONLY, REMOTE_ONLY
from .minion import MINION
from .minions import MINIONS

log = logging.getLogger(__name__)

Builder = Callable[[], StateGraph[Any]]

BUILT_IN: tuple[Protocol, ...] = (MINIONS, MINION, REMOTE_ONLY, LOCAL_ONLY)
ENTRY_POINTS = "minionflow.protocols"
_registered: dict[str, Protocol] = {}
_lock = threading.Lock()  # guards _registered
_loading = threading.Lock()  # held while the entry points are loaded
_loaded = False
for _protocol in BUILT_IN:  # what RunSettings' embedded-supervisor defaults need to know
    record_min_rounds(_protocol.name, _protocol.min_rounds)


def register(protocol: Protocol) -> None:
    """Make ``protocol`` known to this process (a package does it with an entry point)."""
    if not isinstance(protocol, Protocol):
        raise TypeError(f"{protocol!r} is not a minionflow Protocol")
    with _lock:
        known = _registered.get(protocol.name)
        if protocol.name in {p.name for p in BUILT_IN} or (known is not None and known is not protocol):
            raise BadInput(f"a protocol named {protocol.name!r} is registered already")
        _registered[protocol.name] = protocol
        record_min_rounds(protocol.name, protocol.min_rounds)


def _load_entry_points() -> None:
    """Register the protocols installed packages name, once; one that cannot be loaded, is
    not a Protocol of its name or takes a name already taken is skipped with a warning."""
    global _loaded
    with _loading:  # a second caller waits for the first to finish, never sees half of them
        if _loaded:
            return
        for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
            try:
                protocol = entry.load()
                if not isinstance(protocol, Protocol) or protocol.name != entry.name:
                    raise TypeError(f"it is not a minionflow Protocol named {entry.name!r}")
                register(protocol)
            except Exception as exc:  # noqa: BLE001 - one broken package does not take the others down
                log.warning("the protocol %s (%s) is not used: %s", entry.name, entry.value, exc)
        _loaded = True


def all_protocols() -> dict[str, Protocol]:
    """Every protocol this process can run, by name: the built-in ones first."""
    _load_entry_points()
    with _lock:
        return {**{p.name: p for p in BUILT_IN}, **_registered}


def get_protocol(name: str) -> Protocol:
    """The protocol of that name (BadInput naming those there are, if none)."""
    known = all_protocols()
    if name not in known:
        raise BadInput(f"unknown protocol {name!r}; choose one of {', '.join(known)}")
    return known[name]


def protocol_for(settings: RunSettings) -> Protocol:
    """The protocol a run with these settings is: its ``protocol``'s, whose graph a custom
    ``graph`` replaces (a custom graph runs on that protocol's state, MinionS's by
    default)."""
    protocol = get_protocol(settings.protocol)
    if not settings.graph:
        return protocol
    spec = settings.graph
    loaded = load_custom_graph(spec)

    def build(from_request: bool = False) -> StateGraph[Any]:
        if from_request:
            raise BadInput(f"{_named(spec)}: a custom graph is run by the CLI or run_minions, not served")
        built = loaded()
        check_graph(spec, built)
        return built

    return replace(protocol, build=build)


REQUIRED_KEYS = ("settings", "task", "documents", "final", "usage")


def _named(spec: str) -> str:
    """How a message names the graph: as ``--graph`` does, or as the object it was given as."""
    return f"graph {spec!r} (a Python object)" if is_in_process(spec) else f"--graph {spec!r}"


def load_custom_graph(spec: str) -> Builder:
    """The builder of the custom graph ``spec`` names (``RunSettings.graph``), checked
    (BadInput if it is none): ``module:attr`` of a ``StateGraph``, a compiled graph or a
    function of no arguments that builds one, or the in-process name of such an object
    given from Python (``contracts.custom_graph``), which only the process that named it
    can rebuild. A compiled graph is compiled again from its ``builder``, with the run's
    checkpointer and store (its own compile options are not used)."""
    if is_in_process(spec):
        target = in_process_graph(spec)
        if target is None:
            raise BadInput(f"graph {spec!r} was a Python object of the process that started this run, and no other "
                           "process can rebuild it: go on in that process, or start the run with graph='module:attr' "
                           "(an importable name)")
        return _builder(spec, target)
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
    return _builder(spec, target)


def _uncompiled(graph: Any) -> Any:
    """A compiled graph's ``StateGraph`` (minionflow compiles it with the run's checkpointer
    and store); anything else as it is."""
    return graph.builder if isinstance(graph, CompiledStateGraph) else graph


def _builder(spec: str, target: Any) -> Builder:
    target = _uncompiled(target)
    if isinstance(target, StateGraph):
        graph = target
        return lambda: graph
    if not callable(target):
        raise BadInput(f"{_named(spec)} is a {type(target).__name__}, not a StateGraph or a function that builds one")
    required = [p for p in inspect.signature(target).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise BadInput(f"{_named(spec)}: a function that builds the graph takes no arguments (it takes "
                       f"{', '.join(p.name for p in required)}); its steps get the models and the sandbox from the "
                       "run's context")

    def build() -> StateGraph[Any]:
        built = _uncompiled(target())
        if not isinstance(built, StateGraph):
            raise BadInput(f"{_named(spec)} returned a {type(built).__name__}, not a StateGraph")
        return built

    return build


def check_graph(spec: str, builder: StateGraph[Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in builder.channels]
    if missing:
        raise BadInput(f"{_named(spec)}: its state lacks {', '.join(missing)}; build it on MinionsState "
                       "(minionflow.graphs.MinionsState) or from minions_builder()")


def build_graph(settings: RunSettings, checkpointer: BaseCheckpointSaver[Any] | None = None,
                store: BaseStore | None = None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled graph a run with these settings uses (run it with a ``RunContext``)."""
    name = settings.graph or settings.protocol
    return protocol_for(settings).build().compile(checkpointer=checkpointer, store=store, name=name)


def thread_settings_ref(saver: BaseCheckpointSaver[Any], thread_id: str, checkpoint_id: str | None = None) -> str | None:
    """The hash a thread stored its settings under (``settings_ref``), None if it has none."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    if checkpoint_id:
        config["configurable"]["checkpoint_id"] = checkpoint_id
    saved = saver.get_tuple(config)  # type: ignore[arg-type]
    ref = saved.checkpoint["channel_values"].get("settings_ref") if saved is not None else None
    return str(ref) if ref else None


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
