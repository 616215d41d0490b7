"""The blob stores minionflow opens for a location (storage.blobstore): SQLite in a folder,
one table in PostgreSQL. Get and put only, a batch answered in the order asked, a key
already there kept as it is (keys are content hashes), and on PostgreSQL the blobs an
earlier version kept in LangGraph's PostgresStore still read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import create_database
from langgraph.store.base import GetOp, PutOp, SearchOp
from minionflow.storage.blobstore import PostgresBlobStore, SqliteBlobStore
from minionflow.storage.persistence import open_persistence
from minionflow.storage.store import BLOB_NAMESPACE, get_text, put_texts

CACHE = ("minionflow", "job_cache")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteBlobStore | PostgresBlobStore]:
    location = str(tmp_path) if request.param == "sqlite" else create_database()
    with open_persistence(location) as (_saver, opened):
        assert isinstance(opened, SqliteBlobStore if request.param == "sqlite" else PostgresBlobStore)
        yield opened


def test_a_batch_is_answered_in_the_order_asked(store):
    results = store.batch([
        PutOp(BLOB_NAMESPACE, "a", {"text": "alpha"}),
        PutOp(CACHE, "a", {"output": {"answer": "42"}}),  # the same key in another namespace
        GetOp(BLOB_NAMESPACE, "a"),
        GetOp(CACHE, "missing"),
        GetOp(CACHE, "a"),
    ])
    assert results[:2] == [None, None]
    assert results[2] is not None and results[2].value == {"text": "alpha"} and results[2].key == "a"
    assert results[3] is None
    assert results[4] is not None and results[4].value == {"output": {"answer": "42"}}
    assert results[4].namespace == CACHE


def test_a_key_already_there_keeps_its_value_and_none_deletes(store):
    store.put(CACHE, "k", {"n": 1}, index=False)
    store.put(CACHE, "k", {"n": 2}, index=False)
    assert store.get(CACHE, "k").value == {"n": 1}
    store.batch([PutOp(CACHE, "k", None), PutOp(CACHE, "other", {"n": 3})])
    assert store.get(CACHE, "k") is None
    assert store.get(CACHE, "other").value == {"n": 3}


def test_thousands_of_blobs_in_one_batch(store):
    texts = [f"chunk {i}: " + "x" * (i % 50) for i in range(2500)]
    digests = put_texts(store, texts)
    assert [get_text(store, d) for d in digests[::499]] == texts[::499]
    assert len(store.batch([GetOp(BLOB_NAMESPACE, d) for d in digests])) == 2500


def test_only_get_and_put(store):
    with pytest.raises(NotImplementedError, match="only get and put"):
        store.batch([SearchOp(BLOB_NAMESPACE)])


def test_blobs_an_earlier_version_kept_in_langgraphs_store_still_read():
    from langgraph.store.postgres import PostgresStore

    url = create_database()
    with PostgresStore.from_conn_string(url) as old:  # how minionflow kept blobs before
        old.setup()
        old.put(BLOB_NAMESPACE, "old-digest", {"text": "written by an earlier minionflow"}, index=False)
        old.put(CACHE, "old-key", {"output": {}}, index=False)
    with open_persistence(url) as (_saver, store):
        assert store.get(BLOB_NAMESPACE, "old-digest").value == {"text": "written by an earlier minionflow"}
        assert store.get(CACHE, "old-key") is None  # a cache entry of then: a miss, its key changed since
        store.put(BLOB_NAMESPACE, "new-digest", {"text": "new"}, index=False)
        got = store.batch([GetOp(BLOB_NAMESPACE, "new-digest"), GetOp(BLOB_NAMESPACE, "old-digest")])
        assert [item.value["text"] for item in got] == ["new", "written by an earlier minionflow"]


def test_another_applications_table_named_store_is_left_alone():
    import psycopg

    url = create_database()
    with psycopg.connect(url, autocommit=True) as conn:  # a shop's table, not LangGraph's
        conn.execute("CREATE TABLE store (id serial PRIMARY KEY, city text)")
    with open_persistence(url) as (_saver, store):
        assert store.get(BLOB_NAMESPACE, "absent") is None  # no query on the shop's table
        store.put(BLOB_NAMESPACE, "d", {"text": "t"}, index=False)
        assert store.get(BLOB_NAMESPACE, "d").value == {"text": "t"}


def test_a_write_and_a_delete_of_one_key_in_a_group_keep_their_order(store):
    store.batch([PutOp(CACHE, "k", {"n": 1}), PutOp(CACHE, "k", None), PutOp(CACHE, "j", {"n": 2})])
    assert store.get(CACHE, "k") is None and store.get(CACHE, "j").value == {"n": 2}
    store.batch([PutOp(CACHE, "k", None), PutOp(CACHE, "k", {"n": 3})])
    assert store.get(CACHE, "k").value == {"n": 3}


def test_sqlite_writes_that_wait_go_in_one_group_commit_and_share_its_outcome(tmp_path):
    """Batches that arrive while a write is under way wait, and the next writer commits
    them all in one statement; each put returns only once its rows are committed (a
    second connection reads them); a failed group write raises in every batch of it."""
    import sqlite3
    import threading
    import time

    store = SqliteBlobStore(tmp_path / "blobs.sqlite")
    statements: list[str] = []
    store._writer.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("INSERT") else None)
    reader = sqlite3.connect(tmp_path / "blobs.sqlite", check_same_thread=False)
    seen: dict[int, bool] = {}

    def put(i: int) -> None:
        store.batch([PutOp(CACHE, f"k{i}", {"n": i})])
        seen[i] = reader.execute("SELECT 1 FROM blobs WHERE key = ?", (f"k{i}",)).fetchone() is not None

    store._commit.lanes.acquire()  # a write under way
    threads = [threading.Thread(target=put, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(store._commit.pending) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    store._commit.lanes.release()
    for t in threads:
        t.join()
    assert seen == {i: True for i in range(5)}
    assert len(statements) == 1, statements  # the five batches in one statement

    def failing(rows: list[Any]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    store._commit.write = failing
    errors: list[BaseException] = []

    def put_failing(i: int) -> None:
        try:
            store.batch([PutOp(CACHE, f"f{i}", {"n": i})])
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    store._commit.lanes.acquire()
    threads = [threading.Thread(target=put_failing, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    while len(store._commit.pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    store._commit.lanes.release()
    for t in threads:
        t.join()
    assert len(errors) == 3 and store._commit.pending == []
    store.close()


def test_sqlite_copies_its_wal_back_once_writes_pause_and_not_while_they_come(tmp_path):
    """The blob store's idle checkpoint: once no write has come for IDLE_CHECKPOINT_S, a
    thread copies the WAL into the database file, so the file alone (as the close would
    leave it) holds the rows; while writes keep coming it waits for them to pause; a
    close cancels one still waiting, and a closed store schedules none."""
    import shutil
    import sqlite3
    import time

    from minionflow.storage import blobstore

    def in_file_alone() -> set[str]:  # the database file without its WAL: what was checkpointed
        copy = tmp_path / f"copy-{time.monotonic_ns()}.sqlite"
        shutil.copyfile(tmp_path / "blobs.sqlite", copy)
        with sqlite3.connect(copy) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'blobs'").fetchone() is None:
                return set()  # not even the table yet
            return {row[0] for row in conn.execute("SELECT key FROM blobs")}

    store = SqliteBlobStore(tmp_path / "blobs.sqlite")
    store._checkpoint_when_idle = lambda delay=0: None  # type: ignore[method-assign]  # held back for now
    store.batch([PutOp(CACHE, "a", {"n": 1})])
    assert in_file_alone() == set()  # in the WAL only
    del store._checkpoint_when_idle  # the store's own again
    store._last_write = time.monotonic() + 60  # "just written": the checkpoint waits for a pause
    store._idle_checkpoint()
    assert store._idle_timer is not None and in_file_alone() == set()
    store._idle_timer.cancel()
    store._idle_timer = None
    store.batch([PutOp(CACHE, "b", {"n": 2})])  # then no write comes
    deadline = time.monotonic() + 10
    while in_file_alone() != {"a", "b"} and time.monotonic() < deadline:
        time.sleep(blobstore.IDLE_CHECKPOINT_S)
    assert in_file_alone() == {"a", "b"}
    assert store.batch([GetOp(CACHE, "b")])[0].value == {"n": 2}
    store._last_write = time.monotonic() + 60
    store._checkpoint_when_idle()
    waiting = store._idle_timer
    assert waiting is not None
    store.close()
    waiting.join(5)
    assert not waiting.is_alive() and store._checkpointer is not None
    store._checkpoint_when_idle()
    assert store._idle_timer is waiting  # nothing new scheduled after the close


def test_a_blob_file_an_earlier_version_made_still_reads_and_takes_writes(tmp_path):
    """Earlier versions made the blob table WITHOUT ROWID; a new file gets a rowid table
    (storage.blobstore._SCHEMA). An old file keeps its table, and reads, writes, ignores a
    key already there and deletes as a new one does."""
    import sqlite3

    path = tmp_path / "blobs.sqlite"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE blobs (namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
                    "PRIMARY KEY (namespace, key)) WITHOUT ROWID")
        old.execute("INSERT INTO blobs VALUES ('minionflow/job_cache', 'then', '{\"n\": 1}')")
    old.close()
    for made in ("old", "new"):
        store = SqliteBlobStore(path if made == "old" else tmp_path / "new.sqlite")
        try:
            store.batch([PutOp(CACHE, "then", {"n": 1}), PutOp(CACHE, "now", {"n": 2})])
            store.batch([PutOp(CACHE, "now", {"n": 3}), PutOp(CACHE, "gone", {"n": 4})])
            store.batch([PutOp(CACHE, "gone", None)])
            found = store.batch([GetOp(CACHE, "then"), GetOp(CACHE, "now"), GetOp(CACHE, "gone")])
            assert [item.value if item else None for item in found] == [{"n": 1}, {"n": 2}, None]
            sql = store._writer.execute("SELECT sql FROM sqlite_master WHERE name = 'blobs'").fetchone()[0]
            assert ("WITHOUT ROWID" in sql) == (made == "old")
        finally:
            store.close()


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_second_write_lane_commits_while_the_first_waits_on_the_server(lanes):
    """PostgreSQL's blob store writes two groups at once (``GroupCommit(lanes=2)``): a
    batch that arrives while a group's write is under way is written beside it, not
    after it; with one lane (SQLite's) it waits. Each batch returns once its own rows
    are written; a failed group's error reaches its batch and frees its lane."""
    import threading

    from minionflow.storage.blobstore import GroupCommit

    started, release, fast_written = threading.Event(), threading.Event(), threading.Event()
    written: list[list[Any]] = []

    def write(rows: list[Any]) -> None:
        if rows[0][1] == "slow":
            started.set()
            assert release.wait(60)
        if rows[0][1] == "bad":
            raise OSError("disk full")
        written.append([key for _ns, key, _value in rows])
        if rows[0][1] == "fast":
            fast_written.set()

    commit = GroupCommit(write, lanes=lanes)
    slow = threading.Thread(target=commit, args=([("ns", "slow", "1")],))
    slow.start()
    assert started.wait(60)  # the slow group's write is under way, holding a lane
    fast = threading.Thread(target=commit, args=([("ns", "fast", "2")],))
    fast.start()
    if lanes == 2:
        assert fast_written.wait(60)  # written while the slow group still holds its lane
    else:
        # the second batch waits for the lane: it is queued and not written within 0.2 s,
        # far longer than a free lane takes (the two-lane case above: well under a
        # millisecond); a lane wrongly free fails this, a slow machine could only pass it
        while not (commit.pending or fast_written.is_set()):
            time.sleep(0.001)
        assert not fast_written.wait(0.2)
    release.set()
    slow.join(timeout=60)
    fast.join(timeout=60)
    assert written == ([["fast"], ["slow"]] if lanes == 2 else [["slow"], ["fast"]])
    with pytest.raises(OSError, match="disk full"):
        commit([("ns", "bad", "3")])
    commit([("ns", "after", "4")])  # the lane the failed group held is free again
    assert written[-1] == ["after"]
