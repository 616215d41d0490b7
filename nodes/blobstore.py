"""A LangGraph store for content-addressed blobs in one SQLite file.

LangGraph's ``SqliteStore`` serialises every operation behind one Python lock and
wraps even a read in BEGIN/COMMIT; with hundreds of jobs reading their chunk and
writing their result at once, that cost about 1 ms a job in the overhead
benchmark. Blobs need only get and put by key, so this store keeps a small pool
of WAL connections (readers run in parallel, writers take SQLite's own lock) and
implements just ``GetOp`` and ``PutOp``. Any other LangGraph store still works
with minionflow (in-memory for tests, PostgreSQL for teams).
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

from langgraph.store.base import BaseStore, GetOp, Item, Op, PutOp, Result

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
            rows = [("/".join(op.namespace), op.key, None if op.value is None else json.dumps(op.value)) for op in puts]
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
