"""What ``langgraph.json`` serves to ``langgraph dev`` and LangGraph Studio.

``graph`` is the MinionS graph taking a plain-JSON ``RunRequest`` (question,
paths or inline texts, settings); ``minion``, ``remote_only`` and ``local_only``
are the other protocols, taking the same input. ``checkpointer`` and ``store`` open the same
location the CLI uses (``$MINIONFLOW_CHECKPOINT``, else the SQLite files in
``$MINIONFLOW_HOME``), so threads started in Studio show in ``minionflow runs``,
and a CLI thread can be opened in Studio (README: "Watch a run in Studio").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore
from minionflow.storage.blobstore import SqliteBlobStore
from minionflow.storage.persistence import BLOBS_FILE, CHECKPOINTS_FILE, is_postgres, resolve_location

from .baselines import local_only_builder, remote_only_builder
from .minion import minion_builder
from .minions import build_minions_graph

# the server gives the graphs their checkpointer and store
graph = build_minions_graph(from_request=True)
minion = minion_builder(from_request=True).compile(name="minion")
remote_only = remote_only_builder(from_request=True).compile(name="remote-only")
local_only = local_only_builder(from_request=True).compile(name="local-only")


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
