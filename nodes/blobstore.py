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
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, GetOp, Item, Op, PutOp, Result

from .store import BLOB_NAMESPACE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
        self._write_lock = threading.Lock()
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
        for conn in self._all:
            conn.close()

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        results: list[Result] = []
        puts = [op for op in ops if isinstance(op, PutOp)]
        if puts:
            rows = _rows(puts)
            with self._write_lock, self._writer as conn:  # one transaction for all the writes
                conn.execute("BEGIN")
                for ns, key, value in rows:
                    if value is None:
                        conn.execute("DELETE FROM blobs WHERE namespace = ? AND key = ?", (ns, key))
                    else:
                        # keys are content hashes: a key that exists holds this value already
                        # (every job's transcript names the same system prompt, for one)
                        conn.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)", (ns, key, value))
        if len(puts) == len(ops):
            return [None] * len(ops)
        with self._conn() as conn:
            for any_op in ops:
                if isinstance(any_op, PutOp):
                    results.append(None)
                elif isinstance(any_op, GetOp):
                    row = conn.execute(
                        "SELECT value FROM blobs WHERE namespace = ? AND key = ?", ("/".join(any_op.namespace), any_op.key)
                    ).fetchone()
                    results.append(
                        None if row is None else
                        Item(value=json.loads(row[0]), key=any_op.key, namespace=any_op.namespace,
                             created_at=_EPOCH, updated_at=_EPOCH)
                    )
                else:
                    raise NotImplementedError(f"SqliteBlobStore supports only get and put, not {type(any_op).__name__}")
        return results

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
    connections (shared with the checkpointer). A batch's writes are one statement (per
    1,000 rows; several go in one transaction), its reads one per namespace; a key that
    exists keeps its value (keys are content hashes)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._legacy = False

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
        ops = list(ops)
        if any(not isinstance(op, (GetOp, PutOp)) for op in ops):
            other = next(op for op in ops if not isinstance(op, (GetOp, PutOp)))
            raise NotImplementedError(f"PostgresBlobStore supports only get and put, not {type(other).__name__}")
        puts = [op for op in ops if isinstance(op, PutOp)]
        gets = [op for op in ops if isinstance(op, GetOp)]
        with self.pool.connection() as conn:
            if puts:
                self._put(conn, puts)
            found = self._get(conn, gets) if gets else {}
        return [found.get((op.namespace, op.key)) if isinstance(op, GetOp) else None for op in ops]

    def _put(self, conn: Any, puts: list[PutOp]) -> None:
        rows = _rows(puts)
        kept = [row for row in rows if row[2] is not None]
        deleted = [row[:2] for row in rows if row[2] is None]
        # A multi-row VALUES list, 1,000 rows a statement (executemany sends one per row).
        # One statement commits on its own (autocommit): one round trip instead of three.
        statements = []
        for start in range(0, len(kept), 1000):
            part = kept[start:start + 1000]
            statements.append((f"INSERT INTO minionflow_blobs VALUES {', '.join(['(%s, %s, %s)'] * len(part))} "
                               "ON CONFLICT DO NOTHING", [field for row in part for field in row]))
        statements += [("DELETE FROM minionflow_blobs WHERE namespace = %s AND key = %s", list(row)) for row in deleted]
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


def _rows(puts: list[PutOp]) -> list[tuple[str, str, str | None]]:
    """A batch's writes as table rows: the namespace joined by "/", the key, the value's
    JSON (None deletes the row)."""
    return [("/".join(op.namespace), op.key, None if op.value is None else json.dumps(op.value)) for op in puts]


def _item(namespace: tuple[str, ...], key: str, value: Any) -> Item:
    return Item(value=value, key=key, namespace=namespace, created_at=_EPOCH, updated_at=_EPOCH)
