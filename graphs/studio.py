"""What ``langgraph.json`` serves to ``langgraph dev`` and LangGraph Studio.

Every registered protocol (``graphs.protocols``) is served under its name, its graph
taking a plain-JSON ``RunRequest`` (question, paths or inline texts, settings): the
attribute of this module named like the protocol, dashes as underscores
(``minionflow.graphs.studio:remote_only``); ``graph`` is MinionS's too.
``studio_config()`` is the ``langgraph.json`` that serves them all (``minionflow
studio-config`` writes it; the repository's own serves the four built in). ``checkpointer``
and ``store`` open the same location the CLI uses (``$MINIONFLOW_CHECKPOINT``, else the
SQLite files in ``$MINIONFLOW_HOME``), so threads started in Studio show in ``minionflow
runs``, and a CLI thread can be opened in Studio (docs/runs.md, "In LangGraph Studio").
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from minionflow.contracts.protocol import Protocol
from minionflow.storage.blobstore import SqliteBlobStore
from minionflow.storage.persistence import BLOBS_FILE, CHECKPOINTS_FILE, is_postgres, resolve_location

from .protocols import all_protocols

_served: dict[str, CompiledStateGraph[Any, Any, Any, Any]] = {}
_lock = threading.Lock()


def attribute(protocol: Protocol) -> str:
    """The name this module serves a protocol's graph under."""
    return protocol.name.replace("-", "_")


def served(protocol: Protocol) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A protocol's graph as LangGraph clients run it (the server gives it its
    checkpointer and store)."""
    with _lock:
        if protocol.name not in _served:
            _served[protocol.name] = protocol.build(from_request=True).compile(name=protocol.name)
        return _served[protocol.name]


# every registered protocol's served graph, as an attribute of this module (langgraph dev
# reads the module's own names); ``graph`` is MinionS's, the name earlier versions served
for _protocol in all_protocols().values():
    globals()[attribute(_protocol)] = served(_protocol)
graph = served(all_protocols()["minions"])


def studio_config(served_protocols: Iterable[Protocol] | None = None) -> dict[str, Any]:
    """The ``langgraph.json`` that serves ``served_protocols`` (default: every registered one)
    from this module, with the CLI's checkpointer and store."""
    chosen = list(all_protocols().values()) if served_protocols is None else list(served_protocols)
    return {
        "$schema": "https://langgra.ph/schema.json",
        "python_version": "3.11",
        "dependencies": ["."],
        "graphs": {p.name: f"{__name__}:{attribute(p)}" for p in chosen},
        "checkpointer": {"backend": "custom", "path": f"{__name__}.checkpointer"},
        "store": {"path": f"{__name__}.store"},
    }


@asynccontextmanager
async def checkpointer() -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The async checkpointer for the location the CLI uses."""
    location = resolve_location(None)
    if is_postgres(location):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(str(location)) as saver:
            await saver.setup()
            yield saver
    else:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        Path(location).mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(Path(location) / CHECKPOINTS_FILE)) as saver:
            await saver.setup()
            yield saver


@asynccontextmanager
async def store() -> AsyncIterator[BaseStore]:
    """The blob store beside it (document and chunk texts, job results, transcripts)."""
    location = resolve_location(None)
    if is_postgres(location):
        from langgraph.store.postgres import PostgresStore

        with PostgresStore.from_conn_string(str(location)) as pg:
            pg.setup()
            yield pg
    else:
        Path(location).mkdir(parents=True, exist_ok=True)
        blobs = SqliteBlobStore(Path(location) / BLOBS_FILE)
        try:
            yield blobs
        finally:
            blobs.close()
