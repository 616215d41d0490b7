"""Invariant 4 (the document is stored once; checkpoints hold references) and the
durability mechanism (a SIGKILL during the minion map loses no finished job)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import GOOD_CODE, final_json
from minionflow.graphs.persistence import sqlite_persistence
from minionflow.nodes.documents import LoadedDocument

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
                       checkpointer=saver, store=store, chunk_tokens=1000, max_chunk_chars=12_000)
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
    # `show --json`) once: the three rounds ask the same task, so their prompts are the same blobs
    assert blobs < 4 * len(text.encode())


def test_sigkill_during_minion_map_loses_no_finished_job(tmp_path):
    calls = tmp_path / "calls.log"
    cmd = [sys.executable, str(HERE / "durable_worker.py"), str(tmp_path), "thread-kill", str(calls)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = calls.read_text().count("END ") if calls.exists() else 0
        if done >= 8:
            break
        assert first.poll() is None, first.stderr.read().decode()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = json.loads(subprocess.run(
        [sys.executable, str(HERE / "durable_worker.py"), str(tmp_path), "thread-kill", str(calls), "--finished"],
        capture_output=True, text=True, check=True,
    ).stdout)
    assert 0 < len(finished) < 30, finished
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout.strip().splitlines()[-1])
    assert out["answer"] == "42"
    starts = [line.split()[1] for line in calls.read_text().splitlines() if line.startswith("START ")]
    # every finished job (its write is in the checkpoint) ran exactly once
    for job in finished:
        assert starts.count(job) == 1, f"finished job {job} ran {starts.count(job)} times"
    # all 30 jobs ran; only jobs that were in flight at the kill ran twice
    assert len(set(starts)) == 30
    assert len(starts) - 30 <= 4
    # the state holds one usage record per job: the calls cut short by the kill left no record
    assert out["local_calls_counted"] == 30
