"""How the settings name a custom graph (``RunSettings.graph``).

Settings are plain data, stored in the thread, so they hold a graph's *name*:

- ``module:attr``, a ``StateGraph``, a compiled graph or a function of no arguments that
  builds one, which any process can import (``minionflow run --graph``);
- for a graph given from Python as the object itself (``RunSettings(graph=builder)``),
  ``graph_name`` finds the name: a function defined at the top of an importable module is
  named where it lives (``my_graphs:build``: any process can import it too); anything else
  (a ``StateGraph`` or a compiled graph object, a function of a notebook or of another
  function) is kept in this process under ``<object>:LABEL#TOKEN``, a name no module can
  have and no other process knows (``in_process_graph``).

A thread started with an in-process name goes on in the process that started it: anywhere
else, ``graphs.protocols.load_custom_graph`` refuses it with one line that says to start the
run with an importable ``module:attr``. The objects kept stay alive as long as the process.
"""

from __future__ import annotations

import re
import sys
import threading
import uuid
from typing import Any

IN_PROCESS = "<object>"  # the module part of an in-process name: never a module's name

_by_name: dict[str, object] = {}
_by_id: dict[int, str] = {}  # id of an object kept (alive: _by_name holds it) -> its name
_lock = threading.Lock()


def importable_name(target: Any) -> str | None:
    """``module:attr`` of a function (or class) defined at the top of an imported module,
    which another process can import as well; None for anything else (an object made at
    run time, a lambda, a function of ``__main__`` or defined inside another)."""
    module_name, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str) or not qualname.isidentifier():
        return None
    module = sys.modules.get(module_name)
    if module is None or module_name == "__main__" or getattr(module, qualname, None) is not target:
        return None
    return f"{module_name}:{qualname}"


def is_graph_object(target: Any) -> bool:
    """A ``StateGraph``, a compiled graph, or a function (any callable) that builds one; what
    the function returns is checked when the graph is built."""
    from langgraph.graph import StateGraph  # here, not at the top: only a graph given as an object needs it
    from langgraph.graph.state import CompiledStateGraph

    return isinstance(target, StateGraph | CompiledStateGraph) or callable(target)


def graph_name(target: Any) -> str:
    """The name the settings record for a graph given as an object (see the module
    docstring); the same object always gets the same name. ValueError if it is no graph."""
    if not is_graph_object(target):
        raise ValueError(f"a graph is module:attr, a StateGraph, a compiled graph or a function that builds one, "
                         f"not a {type(target).__name__}")
    importable = importable_name(target)
    if importable is not None:
        return importable
    with _lock:
        name = _by_id.get(id(target))
        if name is None:
            label = re.sub(r"\W+", "_", getattr(target, "__qualname__", None) or type(target).__name__).strip("_")
            name = f"{IN_PROCESS}:{label or 'graph'}#{uuid.uuid4().hex[:12]}"
            _by_id[id(target)] = name
            _by_name[name] = target
        return name


def is_in_process(name: str) -> bool:
    """Whether ``name`` is an in-process name (``<object>:...``), whichever process made it."""
    return name.partition(":")[0] == IN_PROCESS


def in_process_graph(name: str) -> object | None:
    """The object this process keeps under ``name``; None if another process made the name."""
    with _lock:
        return _by_name.get(name)


__all__ = ["IN_PROCESS", "graph_name", "importable_name", "in_process_graph", "is_graph_object", "is_in_process"]
