"""LangGraph stores for content-addressed blobs: one SQLite file, or one PostgreSQL table.

LangGraph's ``SqliteStore`` serialises every operation behind one Python lock and
wraps even a read in BEGIN/COMMIT; with hundreds of jobs reading their chunk and
writing their result at once, that cost about 1 ms a job in the overhead
benchmark. Blobs need only get and put by key, so this store keeps a small pool
of WAL connections (readers run in parallel, writers take SQLite's own lock) and
implements just ``GetOp`` and ``PutOp``. Any other LangGraph store still works
with minionflow (in-memory for tests, LangGraph's ``PostgresStore``, a server's own).

``PostgresBlobStore`` is the same for PostgreSQL: LangGraph's ``PostgresStore`` keeps
each value as JSONB with timestamps and TTL columns and upserts row by row, which added
4.6 ms a job to a round of 1,000 jobs (benchmarks/durability.py); blobs need one text
column and a multi-row insert that ignores a key already there.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, GetOp, Item, Op, PutOp, Result

from .store import BLOB_NAMESPACE

log = logging.getLogger(__name__)

# A rowid table with the key as its primary key index, not a WITHOUT ROWID table: keys are
# hashes, so each job's rows went to random leaves of the one B-tree that also held the
# values (a few KB a row, with overflow pages). Rows now go to the end of the table in the
# order written, and only the small key index is written at random: the map node took
# 0.96 ms a job instead of 1.21, and a whole round of 1,000 jobs 2.11 instead of 2.27 (medians
# of five, benchmarks/overhead.py). A file an earlier version made keeps its WITHOUT
# ROWID table; both take the same statements.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
)
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# rows (or keys) in one SQLite statement: 3 values a row, under SQLite's oldest limit of
# 999 values a statement
_ROWS_PER_STATEMENT = 300
# WAL pages after which a commit checkpoints (SQLite's default: 1,000); see SqliteBlobStore
WAL_CHECKPOINT_PAGES = 4000
# writes paused this long: the blob store checkpoints its WAL on a thread of its own
# (SqliteBlobStore._checkpoint_when_idle)
IDLE_CHECKPOINT_S = 0.02


Row = tuple[str, str, str | None]  # namespace joined by "/", key, the value's JSON (None: delete)


@dataclass
class _Pending:
    """A batch's rows waiting to be written, and how its write ended."""

    rows: list[Row]
    taken: bool = False  # a writer has them in a group under way
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit:
    """Writes of many threads, committed in groups. A batch that finds every write lane
    busy waits; the next writer then writes every batch waiting, in one statement or
    transaction, and each returns once its rows are committed (or raises the group's
    error). A round's jobs each write their result as they end: one at a time, each
    write was a commit (and on PostgreSQL a round trip and a WAL flush), and on SQLite
    each call into SQLite lets go of Python's GIL and waits to take it back (up to 5 ms
    while other threads run), so the writes queued (2.5 ms a job at 1,000 jobs).

    ``lanes``: groups written at once. SQLite takes one writer at a time; PostgreSQL
    takes several, and a group's round trip (about 5 ms at 1,000 jobs, two thirds of it
    waiting on the server and for the GIL) then no longer holds up the jobs that end
    meanwhile. A batch's rows are always in one group, and a batch returns only once
    they are committed, so a write that follows another's return comes after it."""

    def __init__(self, write: Callable[[list[Row]], None], lanes: int = 1) -> None:
        self.write = write
        self.lanes = threading.Semaphore(lanes)  # one held by each write under way
        self.pending: list[_Pending] = []
        self._pending_lock = threading.Lock()

    def __call__(self, rows: list[Row]) -> None:
        mine = _Pending(rows)
        with self._pending_lock:
            self.pending.append(mine)
        with self.lanes:
            with self._pending_lock:
                # mine may be in a group another lane is writing already: then wait for that one
                group, self.pending = ([], self.pending) if mine.taken else (self.pending, [])
                for pending in group:
                    pending.taken = True
            if group:
                try:
                    self.write([row for pending in group for row in pending.rows])
                except BaseException as exc:
                    for pending in group:
                        pending.error = exc
                finally:
                    for pending in group:
                        pending.finished.set()
        mine.finished.wait()
        if mine.error is not None:
            raise mine.error


class SqliteBlobStore(BaseStore):
    def __init__(self, path: str | Path, connections: int = 4) -> None:
        self.path = str(path)
        self._pool: queue.Queue[sqlite3.Connection] = queue.Queue()
        self._all: list[sqlite3.Connection] = []
        for _ in range(connections):
            self._pool.put(self._connect())
        # One connection writes, behind a Python lock: SQLite lets one writer in at a
        # time anyway, and a pooled connection that found the lock taken would sleep in
        # SQLite's busy handler (1, 2, 5 ms ...) holding a connection readers need.
        self._writer = self._connect()
        # SQLite copies the WAL back into the database (a checkpoint, with two fsyncs) when
        # a commit finds it over 1,000 pages; a job's write is about 15 pages (its rows land
        # on random pages: their keys are hashes), so one job in about 70 paid one, 20-50
        # ms. At 4,000 pages (16 MB) a quarter as many run, each writing back once the pages
        # the jobs between them share; the map node alone took 1.16 ms a job instead of
        # 1.53 (benchmarks/overhead.py).
        self._writer.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        # The close of the last connection checkpoints too, then deletes the WAL: 55-62 ms at
        # the end of a round of 1,000 jobs (benchmarks/overhead.py). When writes pause (a
        # round's jobs are done, the filter reads), a thread copies the WAL back meanwhile,
        # in SQLite's PASSIVE mode (it waits for no reader or writer), letting go of
        # Python's GIL: the close then finds little or nothing to copy.
        self._last_write = 0.0
        self._idle_timer: threading.Timer | None = None  # the idle checkpoint waiting, if one is
        self._idle_lock = threading.Lock()  # guards _idle_timer and _closed
        self._checkpointing = threading.Lock()  # held while an idle checkpoint runs
        self._checkpointer: sqlite3.Connection | None = None  # its connection, opened by the first
        self._closed = False
        self._commit = GroupCommit(self._write)
        self._writer.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        # a committed blob survives a killed process without an fsync per write
        conn.execute("PRAGMA synchronous=NORMAL")
        # 256 KiB of page cache a connection, not SQLite's 2 MiB: a blob is written once and
        # read about once (the OS caches the file), and five connections' default caches
        # were 6 MB of the overhead benchmark's peak
        conn.execute("PRAGMA cache_size=-256")
        self._all.append(conn)
        return conn

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = self._pool.get()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    def close(self) -> None:
        with self._idle_lock:
            self._closed = True
            if self._idle_timer is not None:
                self._idle_timer.cancel()
        with self._checkpointing:  # one under way ends first
            for conn in self._all:
                conn.close()

    def _checkpoint_when_idle(self, delay: float = IDLE_CHECKPOINT_S) -> None:
        """After a write: a checkpoint once no write has come for ``IDLE_CHECKPOINT_S``,
        unless one is waiting already (it looks again when its time comes)."""
        with self._idle_lock:
            if self._closed or self._idle_timer is not None:
                return
            self._idle_timer = threading.Timer(delay, self._idle_checkpoint)
            self._idle_timer.daemon = True
            self._idle_timer.start()

    def _idle_checkpoint(self) -> None:
        with self._idle_lock:
            self._idle_timer = None
        wait = self._last_write + IDLE_CHECKPOINT_S - time.monotonic()
        if wait > 0:  # written since: wait until the writes pause
            self._checkpoint_when_idle(wait)
            return
        with self._checkpointing:
            if self._closed:
                return
            if self._checkpointer is None:
                self._checkpointer = self._connect()
            try:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # the commit at 4,000 pages, or the close, copies it instead
                log.warning("blob store checkpoint failed: %s", exc)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops, puts, gets = _split(ops, type(self).__name__)
        if puts:
            self._commit(_rows(puts))
        found = self._get(gets) if gets else {}
        return [found.get((op.namespace, op.key)) if isinstance(op, GetOp) else None for op in ops]

    def _write(self, rows: list[Row]) -> None:
        # keys are content hashes: a key that exists holds this value already (every job's
        # transcript names the same system prompt, for one)
        statements = _statements(rows, "INSERT OR IGNORE INTO blobs VALUES {}", "(?, ?, ?)",
                                 "DELETE FROM blobs WHERE namespace = ? AND key = ?", _ROWS_PER_STATEMENT)
        if len(statements) == 1:  # one statement commits on its own
            self._writer.execute(*statements[0])
        else:
            with self._writer as conn:  # one transaction for all the writes
                conn.execute("BEGIN")
                for statement in statements:
                    conn.execute(*statement)
        self._last_write = time.monotonic()
        self._checkpoint_when_idle()

    def _get(self, gets: list[GetOp]) -> dict[tuple[tuple[str, ...], str], Item]:
        """A batch's reads, one SELECT per namespace (and per ``_ROWS_PER_STATEMENT`` keys)."""
        found: dict[tuple[tuple[str, ...], str], Item] = {}
        by_ns: dict[tuple[str, ...], list[str]] = {}
        for op in gets:
            by_ns.setdefault(op.namespace, []).append(op.key)
        with self._conn() as conn:
            for ns, keys in by_ns.items():
                unique = list(dict.fromkeys(keys))
                for start in range(0, len(unique), _ROWS_PER_STATEMENT):
                    part = unique[start:start + _ROWS_PER_STATEMENT]
                    rows = conn.execute(f"SELECT key, value FROM blobs WHERE namespace = ? AND key IN "
                                        f"({', '.join('?' * len(part))})", ["/".join(ns), *part]).fetchall()
                    for key, value in rows:
                        found[(ns, key)] = _item(ns, key, json.loads(value))
        return found

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return self.batch(ops)


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS minionflow_blobs (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
)
"""
# LangGraph's PostgresStore table, where earlier versions of minionflow kept the blobs: read
# for keys the blob table does not have, so threads written then still resume and show.
_LEGACY_TABLE = "store"


class PostgresBlobStore(BaseStore):
    """Blobs in one PostgreSQL table, over a psycopg ``ConnectionPool`` of autocommit
    connections (shared with the checkpointer). Writes go in group commits (``GroupCommit``):
    one statement per 1,000 rows, several in one transaction, and two groups at once
    (``write_lanes``, set by ``storage.persistence``); a batch's reads are one
    statement per namespace; a key that exists keeps its value (keys are content hashes)."""

    def __init__(self, pool: Any, write_lanes: int = 1) -> None:
        self.pool = pool
        self._legacy = False
        self._commit = GroupCommit(self._write, lanes=write_lanes)

    def setup(self) -> None:
        from psycopg.rows import tuple_row

        with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(_PG_SCHEMA)
            # LangGraph's table, not another application's table of that name
            row = cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
                              "AND table_name = %s AND column_name IN ('prefix', 'key', 'value')",
                              (_LEGACY_TABLE,)).fetchone()
            self._legacy = bool(row and row[0] == 3)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops, puts, gets = _split(ops, type(self).__name__)
        if puts:
            self._commit(_rows(puts))
        if not gets:
            return [None] * len(ops)
        with self.pool.connection() as conn:
            found = self._get(conn, gets)
        return [found.get((op.namespace, op.key)) if isinstance(op, GetOp) else None for op in ops]

    def _write(self, rows: list[Row]) -> None:
        # a multi-row VALUES list, 1,000 rows a statement (executemany sends one per row);
        # one statement commits on its own (autocommit): one round trip
        statements = _statements(rows, "INSERT INTO minionflow_blobs VALUES {} ON CONFLICT DO NOTHING", "(%s, %s, %s)",
                                 "DELETE FROM minionflow_blobs WHERE namespace = %s AND key = %s", 1000)
        with self.pool.connection() as conn:
            if len(statements) == 1:
                conn.execute(*statements[0])
                return
            with conn.transaction():
                for statement in statements:
                    conn.execute(*statement)

    def _get(self, conn: Any, gets: list[GetOp]) -> dict[tuple[tuple[str, ...], str], Item]:
        from psycopg.rows import tuple_row

        found: dict[tuple[tuple[str, ...], str], Item] = {}
        by_ns: dict[tuple[str, ...], list[str]] = {}
        for op in gets:
            by_ns.setdefault(op.namespace, []).append(op.key)
        with conn.cursor(row_factory=tuple_row) as cur:  # whatever rows the pool's connections make
            for ns, keys in by_ns.items():
                rows = cur.execute("SELECT key, value FROM minionflow_blobs WHERE namespace = %s AND key = ANY(%s)",
                                   ("/".join(ns), keys)).fetchall()
                for key, value in rows:
                    found[(ns, key)] = _item(ns, key, json.loads(value))
                missing = [k for k in keys if (ns, k) not in found]
                # only the blobs: a job cache entry of then is a miss (its key changed since)
                if missing and self._legacy and ns == BLOB_NAMESPACE:
                    rows = cur.execute(f"SELECT key, value FROM {_LEGACY_TABLE} WHERE prefix = %s AND key = ANY(%s)",
                                       (".".join(ns), missing)).fetchall()
                    for key, value in rows:  # JSONB, read as Python values
                        found[(ns, key)] = _item(ns, key, value)
        return found

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return self.batch(ops)


def _statements(rows: list[Row], insert: str, values: str, delete: str, per_statement: int
                ) -> list[tuple[str, list[Any]]]:
    """The statements that write ``rows``: multi-row inserts of ``per_statement`` rows
    (``insert`` with ``{}`` for the ``values`` lists), or, when a row deletes, one
    statement per row in their order (a batch may write a key and delete it)."""
    if any(value is None for _, _, value in rows):
        return [(delete, [ns, key]) if value is None else (insert.format(values), [ns, key, value])
                for ns, key, value in rows]
    return [(insert.format(", ".join([values] * len(part))), [field for row in part for field in row])
            for part in (rows[start:start + per_statement] for start in range(0, len(rows), per_statement))]


def _split(ops: Iterable[Op], store: str) -> tuple[list[Op], list[PutOp], list[GetOp]]:
    """A batch's operations, its puts and its gets (a blob store does nothing else: any
    other operation is NotImplementedError, naming the store)."""
    ops = list(ops)
    other = next((op for op in ops if not isinstance(op, (GetOp, PutOp))), None)
    if other is not None:
        raise NotImplementedError(f"{store} supports only get and put, not {type(other).__name__}")
    return ops, [op for op in ops if isinstance(op, PutOp)], [op for op in ops if isinstance(op, GetOp)]


def _rows(puts: list[PutOp]) -> list[Row]:
    """A batch's writes as table rows: the namespace joined by "/", the key, the value's
    JSON (None deletes the row)."""
    return [("/".join(op.namespace), op.key, None if op.value is None else json.dumps(op.value)) for op in puts]


def _item(namespace: tuple[str, ...], key: str, value: Any) -> Item:
    return Item(value=value, key=key, namespace=namespace, created_at=_EPOCH, updated_at=_EPOCH)
