"""Where threads live: a LangGraph checkpointer plus the blob store beside it.

A location is either a folder, holding ``checkpoints.sqlite`` and ``blobs.sqlite``
(the default: ``$MINIONFLOW_HOME`` or ``~/.local/share/minionflow``), or a
``postgresql://`` URL, where langgraph-checkpoint-postgres keeps the checkpoints
and ``storage.blobstore.PostgresBlobStore`` the blobs (one table), so a team shares one
database.
``$MINIONFLOW_CHECKPOINT`` sets the location when none is given.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.base import BaseStore
from minionflow.contracts.errors import BadInput
from minionflow.storage.blobstore import PostgresBlobStore, SqliteBlobStore

Location = str | Path
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CHECKPOINTS_FILE, BLOBS_FILE = "checkpoints.sqlite", "blobs.sqlite"  # in a location that is a folder
# Connections shared by the checkpointer and the blob store. Jobs of a round
# finish on many threads; each write borrows a connection for a few ms.
POSTGRES_POOL_SIZE = 16
POSTGRES_CONNECT_TIMEOUT_S = 5
LOCK_PREFIX = "minionflow thread "  # what a thread's PostgreSQL advisory lock is keyed on, with its id


def data_dir() -> Path:
    return Path(os.environ.get("MINIONFLOW_HOME") or Path.home() / ".local/share/minionflow")


def resolve_location(location: Location | None = None) -> Location:
    """The given location, else ``$MINIONFLOW_CHECKPOINT``, else the data folder."""
    if location is None or location == "":
        location = os.environ.get("MINIONFLOW_CHECKPOINT") or data_dir()
    if isinstance(location, str) and not is_postgres(location):
        return Path(location)
    return location


def is_postgres(location: Location) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def describe(location: Location) -> str:
    """The location for messages, with any password masked."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", str(location))


def exists(location: Location) -> bool:
    """Whether the location can hold threads already (a Postgres URL always may)."""
    return is_postgres(location) or (Path(location) / CHECKPOINTS_FILE).exists()


@contextmanager
def open_persistence(location: Location | None = None) -> Iterator[tuple[BaseCheckpointSaver[str], BaseStore]]:
    """The checkpointer and blob store for a location (see the module docstring)."""
    resolved = resolve_location(location)
    if is_postgres(resolved):
        with postgres_persistence(str(resolved)) as pair:
            yield pair
    else:
        with sqlite_persistence(Path(resolved)) as pair:
            yield pair


@contextmanager
def sqlite_persistence(directory: Path | None = None) -> Iterator[tuple[SqliteSaver, SqliteBlobStore]]:
    """The default persistence: SQLite checkpoints and a separate SQLite blob store."""
    directory = directory or data_dir()
    directory.mkdir(parents=True, exist_ok=True)
    ck: sqlite3.Connection | None = None
    blobs: SqliteBlobStore | None = None
    try:
        ck = sqlite3.connect(directory / CHECKPOINTS_FILE, check_same_thread=False)
        # WAL with synchronous=NORMAL: a committed write survives a killed or crashed
        # process (what resuming relies on) without an fsync per finished job; only an
        # OS crash or power cut can lose the last transactions.
        ck.execute("PRAGMA journal_mode=WAL")
        ck.execute("PRAGMA synchronous=NORMAL")
        blobs = SqliteBlobStore(directory / BLOBS_FILE)
        saver = SqliteSaver(ck)
        saver.setup()
    except sqlite3.DatabaseError as exc:
        for opened in (ck, blobs):
            if opened is not None:
                opened.close()
        reason = "another process holds a lock on it; try again when it is done" if "locked" in str(exc) else str(exc)
        raise BadInput(f"{directory}: the checkpoint or blob database cannot be used ({reason})") from None
    try:
        yield saver, blobs
    finally:
        ck.close()
        blobs.close()


@contextmanager
def postgres_persistence(url: str) -> Iterator[tuple[BaseCheckpointSaver[str], BaseStore]]:
    """Checkpoints (PostgresSaver) and blobs (``PostgresBlobStore``, one table) in one
    PostgreSQL database, over one connection pool. The tables are created on first use."""
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool
    except ImportError as exc:  # pragma: no cover - both are core dependencies
        raise BadInput(f"PostgreSQL checkpoints need langgraph-checkpoint-postgres and psycopg ({exc})") from None
    # synchronous_commit=off, the trade SQLite makes with synchronous=NORMAL: a commit
    # survives a killed or crashed minionflow (what resuming relies on) without a WAL
    # flush per finished job; a crash of the database server itself can lose the last
    # fraction of a second of commits, whose jobs then run again on resume.
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row,
              "options": "-c synchronous_commit=off"}
    try:
        # One direct connection first: a wrong URL fails in seconds with the server's own words.
        with psycopg.connect(url, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S, autocommit=True):
            pass
    except (psycopg.Error, ValueError) as exc:
        raise BadInput(f"cannot connect to PostgreSQL at {describe(url)}: {str(exc).strip()}") from None
    pool: ConnectionPool[psycopg.Connection[dict[str, object]]] = ConnectionPool(
        url, min_size=1, max_size=POSTGRES_POOL_SIZE, kwargs=kwargs, open=True, name="minionflow"
    )
    try:
        saver = PostgresSaver(pool)  # type: ignore[arg-type]
        # two groups of blob writes in flight: a round of 1,000 jobs added 2.16 ms a job
        # instead of 2.38 with one (medians of five, benchmarks/durability.py); three or four
        # gained nothing more
        store = PostgresBlobStore(pool, write_lanes=2)
        try:
            saver.setup()
            store.setup()
        except psycopg.Error as exc:
            raise BadInput(f"PostgreSQL at {describe(url)} cannot hold checkpoints: {str(exc).strip()}") from None
        yield saver, store
    finally:
        pool.close()


class ThreadBusy(BadInput):
    """Another process is running the thread."""


@contextmanager
def thread_lock(location: Location | None, thread_id: str) -> Iterator[None]:
    """Hold the thread for this process while it runs: a second process that would run
    it at the same time (two ``resume`` of one thread) is refused with ``ThreadBusy``
    before it reads or writes anything, instead of running its jobs twice. A folder
    location locks a file under ``locks/`` (``flock``); a PostgreSQL one takes a session
    advisory lock on a connection of its own (straight to PostgreSQL: a pooler in
    transaction mode, such as PgBouncer's, cannot hold a session lock). Both end with
    the process, even a killed one, so a crash never leaves a thread locked."""
    resolved = resolve_location(location)
    def busy(holder: str = "") -> ThreadBusy:
        who = f"another process (pid {holder})" if holder else "another process"
        return ThreadBusy(f"thread {thread_id} is running in {who}; wait for it to finish, or stop it "
                          "(Ctrl-C pauses it) and resume")

    if is_postgres(resolved):
        import psycopg

        try:
            # keepalives: a peer gone without a word ends the session (and frees the lock) in
            # minutes, and an idle session behind a NAT is not dropped while the run holds it
            conn = psycopg.connect(str(resolved), connect_timeout=POSTGRES_CONNECT_TIMEOUT_S, autocommit=True,
                                   keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        except (psycopg.Error, ValueError) as exc:
            raise BadInput(f"cannot connect to PostgreSQL at {describe(str(resolved))}: {str(exc).strip()}") from None
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (LOCK_PREFIX + thread_id,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise BadInput(f"cannot lock thread {thread_id} in PostgreSQL at {describe(str(resolved))}: "
                           f"{str(exc).strip()}") from None
        with conn:
            if not row or not row[0]:
                raise busy()
            yield  # the lock ends with the session
        return
    folder = Path(resolved) / "locks"
    path = folder / (hashlib.sha256(thread_id.encode()).hexdigest()[:32] + ".lock")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held open for the run, closed below
    except OSError as exc:
        raise BadInput(f"cannot use {resolved} for threads: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise busy(handle.read().strip()) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
