"""The document is stored once and checkpoints hold references to it, and the
durability: a SIGKILL during the minion map, between rounds or during the
sandbox execution loses no finished job or model call (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import GOOD_CODE, Where, final_json
from langgraph.store.base import BaseStore, GetOp
from langgraph.store.memory import InMemoryStore
from minionflow.contracts.state import JobBatch, JobRecord
from minionflow.graphs import RunContext
from minionflow.nodes.support.common import batch_from_ref
from minionflow.storage.documents import LoadedDocument
from minionflow.storage.persistence import open_persistence, sqlite_persistence
from minionflow.storage.store import get_json, put_json, put_texts

HERE = Path(__file__).parent


def test_one_megabyte_document_three_rounds_checkpoint_db_smaller_than_document(run_fake, tmp_path):
    """Invariant 4. Text never enters a checkpoint: the document and its chunks are
    blobs, stored once. What checkpoints do hold grows with the number of jobs
    (LangGraph keeps each Send and each task's write as a row), about 1.5 KB a
    job in SQLite, so the database stays below the document for chunks of a few
    KB; the supervisor here uses the 2,000-token chunks of chunk_by_section."""
    paragraph = "Quarterly shipments through the northern terminal were recorded in the ledger. " * 6
    paragraphs = [f"Section {i}. {paragraph}" for i in range(2200)]
    paragraphs[1500] = "Section 1500. The secret number is 42, written in the ledger."
    paragraphs[700] = "Section 700. UNQUOTED-CANARY-SENTENCE sits in a chunk no minion quotes."
    text = "\n\n".join(paragraphs)
    assert len(text.encode()) > 1_000_000
    code = GOOD_CODE.replace('doc.split("\\n\\n")', "chunk_by_tokens(doc, max_tokens=2000)")
    assert "chunk_by_tokens" in code

    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return code
        if "Round 3 of" in prompt:
            return final_json()
        return final_json("?", "request_additional_info", feedback="keep looking", scratchpad="nothing yet")

    with sqlite_persistence(tmp_path) as (saver, store):
        run = run_fake(remote=remote, documents=[LoadedDocument(title="big.txt", text=text, pages=1)],
                       checkpointer=saver, store=store, chunk_tokens=1000, max_chunk_chars=12_000,
                       job_cache=False)  # every round's jobs run and are stored, as with a supervisor that changes them
    assert run.values["final"]["rounds"] == 3
    assert [r["plan_source"] for r in run.values["rounds"]] == ["supervisor"] * 3
    jobs = run.values["rounds"][0]["jobs"]
    assert len(text) // 8000 <= jobs <= len(text) // 6000  # ~2,000-token chunks
    assert len(run.local.prompts) == 3 * jobs
    db = tmp_path / "checkpoints.sqlite"
    size = db.stat().st_size + sum(p.stat().st_size for p in tmp_path.glob("checkpoints.sqlite-*"))
    assert size < len(text.encode()), f"checkpoint database is {size:,} bytes for a {len(text.encode()):,} byte document"
    assert size / (3 * jobs) < 2500, f"{size / (3 * jobs):.0f} bytes of checkpoint per job"
    assert b"UNQUOTED-CANARY-SENTENCE" not in db.read_bytes()
    assert b"Quarterly shipments through the northern terminal" not in db.read_bytes()
    blobs = (tmp_path / "blobs.sqlite").stat().st_size
    # the document once, its chunks once, and the worker prompts quoting them (kept for
    # `show --json`) once, plus the prompts' template text, JSON and SQLite page overhead: the
    # three rounds ask the same task, so their prompts are the same blobs (else it would be 5x)
    assert blobs < 4.5 * len(text.encode())


def database_bytes(url: str, tables: list[str]) -> bytes:
    """Every value of every row of ``tables`` in the database at ``url``, as bytes (a
    ``bytea`` as it is, anything else as its JSON)."""
    import psycopg
    from psycopg import sql

    out = bytearray()
    with psycopg.connect(url) as conn:
        for table in tables:
            for row in conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))):
                for value in row:
                    out += value if isinstance(value, bytes | memoryview) else json.dumps(value, default=str).encode()
    return bytes(out)


def test_no_document_text_in_postgresql_checkpoints(run_fake):
    """Invariant 4 on PostgreSQL: a run's checkpoint tables (LangGraph's checkpoints,
    their blobs and the tasks' writes) hold no text of the document that no minion
    quoted; the blob table beside them does hold it (the scan can find it)."""
    from conftest import create_database

    paragraph = "Quarterly shipments through the northern terminal were recorded in the ledger. " * 6
    paragraphs = [f"Section {i}. {paragraph}" for i in range(60)]
    paragraphs[40] = "Section 40. The secret number is 42, written in the ledger."
    paragraphs[20] = "Section 20. UNQUOTED-CANARY-SENTENCE sits in a chunk no minion quotes."
    text = "\n\n".join(paragraphs)
    url = create_database()
    with open_persistence(url) as (saver, store):
        run = run_fake(documents=[LoadedDocument(title="ledger.txt", text=text, pages=1)], checkpointer=saver,
                       store=store, chunk_tokens=200, job_cache=False)
    assert run.values["final"]["answer"] == "42" and run.values["rounds"][0]["jobs"] >= 5
    checkpoints = database_bytes(url, ["checkpoints", "checkpoint_blobs", "checkpoint_writes"])
    assert len(checkpoints) > 10_000  # the scan read the checkpoints
    # (the answer's quote, a sentence a minion cites, is part of the answer and may be kept)
    assert b"UNQUOTED-CANARY-SENTENCE" not in checkpoints
    assert b"Quarterly shipments through the northern terminal" not in checkpoints
    assert b"UNQUOTED-CANARY-SENTENCE" in database_bytes(url, ["minionflow_blobs"])


def worker(where: Where, thread: str, calls: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HERE / "durable_worker.py"), str(where.location), thread, str(calls), *extra]


def kill_when(proc: subprocess.Popen[bytes], calls: Path, ready: Callable[[str], bool]) -> None:
    deadline = time.monotonic() + 60
    while not (calls.exists() and ready(calls.read_text())):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the worker never reached the kill point"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def finish(cmd: list[str]) -> dict[str, Any]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def starts(calls: Path) -> Counter[str]:
    return Counter(line.split()[1] for line in calls.read_text().splitlines() if line.startswith("START "))


@pytest.fixture(scope="module")
def two_rounds_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Counter[str]]:
    """The reference: the same two-round run with nothing killed."""
    home = tmp_path_factory.mktemp("reference")
    calls = home / "calls.log"
    out = finish(worker(Where("sqlite", home, home), "reference", calls, "--rounds", "2"))
    assert out["rounds"] == 2
    return out, starts(calls)


def test_sigkill_during_minion_map_loses_no_finished_job(where: Where, tmp_path: Path, spawn):
    calls = tmp_path / "calls.log"
    cmd = worker(where, "thread-kill", calls)
    kill_when(spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE), calls,
              lambda log: log.count("END ") >= 9)  # the decompose call and 8 jobs
    finished = json.loads(subprocess.run(worker(where, "thread-kill", calls, "--finished"),
                                         capture_output=True, text=True, check=True).stdout)
    assert 0 < len(finished) < 30, finished
    out = finish(cmd)
    assert out["answer"] == "42"
    ran = starts(calls)
    # every finished job (its write is in the checkpoint) ran exactly once
    for job in finished:
        assert ran[f"job:1:{job}"] == 1, f"finished job {job} ran {ran[f'job:1:{job}']} times"
    jobs = {k: v for k, v in ran.items() if k.startswith("job:")}
    # all 30 jobs ran; only jobs that were in flight at the kill ran twice
    assert len(jobs) == 30 and sum(jobs.values()) - 30 <= 4
    assert ran["decompose:1"] == 1 and ran["aggregate:1"] == 1
    # the state holds one usage record per job: the calls cut short by the kill left no record
    assert out["local_calls_counted"] == 30


@pytest.mark.parametrize("hang", ["decompose:2", "execute:2"])
def test_sigkill_between_rounds_and_during_execute(where: Where, tmp_path: Path, hang: str, two_rounds_uninterrupted,
                                                 spawn):
    """Killed after round 1's aggregation, while round 2's decompose call (or its code
    in the sandbox) is in flight: after the resume the answer and every count match
    the uninterrupted run, and only the call that was cut short ran twice."""
    reference, reference_ran = two_rounds_uninterrupted
    calls = tmp_path / "calls.log"
    first = spawn(worker(where, "t", calls, "--rounds", "2", "--hang", hang),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_when(first, calls, lambda log: f"START {hang}\n" in log)
    out = finish(worker(where, "t", calls, "--rounds", "2"))
    ran = starts(calls)
    assert out == reference
    assert out["remote_calls_counted"] == ["decompose:1", "aggregate:1", "decompose:2", "aggregate:2"]
    assert out["local_calls_counted"] == 31  # 30 blocks, then the one that had the number
    expected = reference_ran.copy()
    expected[hang] += 1  # cut short by the kill, so run again; nothing finished was redone
    assert ran == expected


class CountingStore(BaseStore):
    """A store that counts the keys read through it, in front of a real one."""

    def __init__(self, inner: BaseStore) -> None:
        self.inner = inner
        self.read: Counter[str] = Counter()

    def batch(self, ops: Any) -> list[Any]:
        ops = list(ops)
        self.read.update(op.key for op in ops if isinstance(op, GetOp))
        return self.inner.batch(ops)

    async def abatch(self, ops: Any) -> list[Any]:
        return self.batch(ops)


def unread(store: CountingStore, keys: set[str]) -> set[str]:
    return {k for k in keys if store.read[k] == 0}


def test_each_run_reads_its_job_batch_from_its_own_store(where: Where, run_fake):
    """Two runs of the same document, code and settings (so the same job batch, by
    content) on one database: the second reads the batch and every chunk from the store
    it was given, SQLite or PostgreSQL, not from the first run's copy; the settings its
    jobs run with come with its context, read from no store."""
    with open_persistence(where.location) as (_saver, store):
        first = run_fake(store=CountingStore(store))
        again = CountingStore(store)
        second = run_fake(store=again)
        jobs_ref = second.values["rounds"][0]["jobs_ref"]
        batch = get_json(store, jobs_ref)
        chunks = {job["chunk_ref"] for job in batch["jobs"]}
    assert jobs_ref == first.values["rounds"][0]["jobs_ref"] and len(chunks) >= 3
    assert unread(again, {jobs_ref, *chunks}) == set()
    assert again.read[batch["settings_ref"]] == 0


def test_the_read_count_catches_a_store_that_was_not_read(run_fake):
    """Negative control: a batch a run's context has loaded is not read from the store
    again in that run, and the count says so."""
    store = CountingStore(InMemoryStore())
    run = run_fake(store=store)
    jobs_ref = run.values["rounds"][0]["jobs_ref"]
    batch = get_json(store, jobs_ref)
    chunks = {job["chunk_ref"] for job in batch["jobs"]}
    context = RunContext()
    loaded = batch_from_ref(context, store, jobs_ref)
    assert {loaded.chunk(store, i) for i in range(len(loaded.batch["jobs"]))}
    store.read.clear()
    again = batch_from_ref(context, store, jobs_ref)
    assert again is loaded and {again.chunk(store, i) for i in range(len(again.batch["jobs"]))}
    assert unread(store, {jobs_ref, *chunks}) == {jobs_ref, *chunks}


def test_a_task_reads_the_chunks_of_its_jobs_only_once_each():
    """A resumed round's task reads the chunks of the jobs it has left, not every chunk of
    the round: in one read, a chunk its jobs share once, and nothing it read before. Jobs
    share chunks (three tasks a chunk)."""
    store = CountingStore(InMemoryStore())
    texts = [f"chunk {i}" for i in range(100)]
    refs = put_texts(store, texts)
    jobs = [JobRecord(job_id=f"j{i}", round=1, attempt=1, task_id=i % 3, chunk_id=i // 3, task="t", advice="",
                      chunk_ref=refs[i // 3], chunk_chars=len(texts[i // 3])) for i in range(300)]
    loaded = batch_from_ref(RunContext(), store, put_json(store, JobBatch(settings_ref="s", jobs=jobs)))
    store.read.clear()
    task = range(200, 300, 33)  # jobs 200, 233, 266, 299: chunks 66, 77, 88, 99
    loaded.read_chunks(store, task)
    assert store.read == {refs[c]: 1 for c in (66, 77, 88, 99)}
    assert [loaded.chunk(store, i) for i in task] == ["chunk 66", "chunk 77", "chunk 88", "chunk 99"]
    assert sum(store.read.values()) == 4  # read already
    loaded.read_chunks(store, [198, 199, 200, 201])  # chunk 66 (jobs 198-200) was read; 67 is new
    assert sum(store.read.values()) == 5 and store.read[refs[67]] == 1
    assert loaded.chunk(store, 0) == "chunk 0" and store.read[refs[0]] == 1 and sum(store.read.values()) == 6
