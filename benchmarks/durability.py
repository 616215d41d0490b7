"""What durability costs: checkpoint overhead per job for each store, and the time
from a resume to the first new job for a thread with 1,000 finished jobs.

    .venv/bin/python benchmarks/durability.py [--jobs 1000] [--repeat 3] [--postgres URL] [--out benchmarks/results/durability.json]

1. One round of N jobs with zero-latency fake models and the real bwrap sandbox,
   on an in-memory checkpointer and store (the baseline), SQLite and PostgreSQL.
   "added ms/job" is the store's cost over the in-memory run (sandbox time excluded).
2. A round of N + 1 jobs whose last job's endpoint stays down: the run stops
   resumable with N finished jobs saved (LangGraph's pending writes of the tasks that
   ended, the jobs' own records in the task that did not). Then ``resume_minions``
   with the endpoint back; the time until the first local call starts.

Targets (issue 10): PostgreSQL adds at most 1.0 ms per job; resume reaches the first new
job in under 0.5 s for a thread with 1,000 finished jobs. Each measurement runs in a fresh process
(on PostgreSQL, in a fresh database), ``--repeat`` times, the stores interleaved; the
tables show each median and the range.
PostgreSQL comes from ``scripts/postgres-setup.sh`` (its URL is the default here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from minionflow.graphs import RunContext

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from workload import QUESTION, document, local, remote, timed_bwrap  # noqa: E402

DOWN_MARKER = "Paragraph DOWN:"


def overhead(store_kind: str, jobs: int, postgres: str) -> dict[str, Any]:
    from fakes import FakeProvider, PromptFake
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore
    from minionflow.graphs import RunSettings, build_minions_graph
    from minionflow.graphs.run import run_config
    from minionflow.nodes.ingest import initial_state
    from minionflow.storage.persistence import open_persistence

    settings = RunSettings(local="embedded;slots=8", max_rounds=1, max_jobs_per_round=max(jobs, 10), local_concurrency=8)
    backend, spent = timed_bwrap()
    with tempfile.TemporaryDirectory() as tmp:
        location = {"sqlite": tmp, "postgres": postgres}.get(store_kind)
        opened = nullcontext((InMemorySaver(), InMemoryStore())) if location is None else open_persistence(location)
        with opened as (saver, store):
            workers = PromptFake(responder=local)
            graph = build_minions_graph(saver, store)
            context = RunContext(settings=settings, models=FakeProvider(PromptFake(responder=remote), workers),
                                 sandbox=backend)
            thread = str(uuid.uuid4())
            started = time.perf_counter()
            state = initial_state(store, [document(jobs, salt=f" of {thread}")], QUESTION, settings)
            for _ in graph.stream(state, run_config(thread, settings), context=context, stream_mode="custom",
                                  durability="sync", subgraphs=True):
                pass
            wall = time.perf_counter() - started
            values = graph.get_state({"configurable": {"thread_id": thread}}).values
    assert values["final"] and values["rounds"][0]["jobs"] == jobs, values.get("notes")
    assert len(workers.prompts) == jobs, f"{jobs - len(workers.prompts)} jobs answered from the job cache"
    return {"store": store_kind, "jobs": jobs, "wall_s": round(wall, 3), "sandbox_s": round(sum(spent), 3),
            "framework_ms_per_job": round(1000 * (wall - sum(spent)) / jobs, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def resume_start(store_kind: str, jobs: int, postgres: str) -> dict[str, Any]:
    import httpx
    import openai
    from fakes import FakeProvider, PromptFake
    from minionflow.graphs import RunSettings
    from minionflow.graphs.run import resume_minions, run_minions

    def local_down(prompt: str) -> str:
        if DOWN_MARKER in prompt:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
        return local(prompt)

    first_call: list[float] = []

    def local_back(prompt: str) -> str:
        first_call.append(time.perf_counter())
        return local(prompt)

    settings = RunSettings(local="embedded;slots=8", max_rounds=1, max_jobs_per_round=jobs + 10, local_concurrency=8)
    backend, _ = timed_bwrap()
    with tempfile.TemporaryDirectory() as tmp:
        location = tmp if store_kind == "sqlite" else postgres
        thread = str(uuid.uuid4())
        # salted: the job cache of a PostgreSQL store outlives the measurement
        doc = document(jobs, extra=[f"{DOWN_MARKER} {thread}" + " cargo manifest entry." * 30], salt=f" of {thread}")
        stopped = run_minions([doc], QUESTION, RunContext(settings=settings, sandbox=backend,
                                         models=FakeProvider(PromptFake(responder=remote), PromptFake(responder=local_down))),
                              thread_id=thread, checkpoint=location)
        assert stopped.status == "failed", stopped.status
        back = PromptFake(responder=local_back)
        started = time.perf_counter()
        done = resume_minions(thread, checkpoint=location,
                              context=RunContext(sandbox=backend, models=FakeProvider(PromptFake(responder=remote), back)))
        total = time.perf_counter() - started
    assert done.status == "answered", done.error
    assert len(back.prompts) == 1, f"{len(back.prompts)} jobs ran again"  # only the one that never finished
    return {"store": store_kind, "finished_jobs": jobs, "resume_to_first_job_s": round(first_call[0] - started, 3),
            "resume_total_s": round(total, 3)}


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new PostgreSQL database beside ``url``'s (its role needs CREATEDB), dropped after:
    a measurement does not read or grow an earlier one's tables."""
    import psycopg
    from psycopg import sql

    name = f"mf_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield url.rsplit("/", 1)[0] + "/" + name
        finally:
            for attempt in range(20):
                try:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                    break
                except psycopg.errors.InsufficientPrivilege:  # an autovacuum worker, which FORCE may not end
                    if attempt == 19:
                        raise
                    time.sleep(0.5)


def fresh(what: str, kind: str, jobs: int, postgres: str) -> dict[str, Any]:
    """One measurement in a fresh process (and, on PostgreSQL, a fresh database)."""
    with fresh_database(postgres) if kind == "postgres" else nullcontext(postgres) as url:
        out = subprocess.run([sys.executable, __file__, "--one", what, kind, str(jobs), "--postgres", url],
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def median_of(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run with the median ``key``, and the range over all runs."""
    ranked = sorted(runs, key=lambda r: r[key])
    row = dict(ranked[len(ranked) // 2])
    row["runs"], row[f"{key}_min"], row[f"{key}_max"] = len(runs), ranked[0][key], ranked[-1][key]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the median is shown)")
    parser.add_argument("--postgres", default=os.environ.get(
        "MINIONFLOW_TEST_POSTGRES", "postgresql://minionflow:minionflow@127.0.0.1:5432/minionflow"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "durability.json")
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        what, store_kind, jobs = args.one[0], args.one[1], int(args.one[2])
        measure = overhead if what == "overhead" else resume_start
        print(json.dumps(measure(store_kind, jobs, args.postgres)))
        return
    # interleaved, so that a slow spell of the machine touches every store alike
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for what, kind in [("overhead", "memory"), ("overhead", "sqlite"), ("overhead", "postgres"),
                           ("resume", "sqlite"), ("resume", "postgres")]:
            runs.setdefault((what, kind), []).append(fresh(what, kind, args.jobs, args.postgres))
    for (what, _kind), done in runs.items():
        if what == "overhead":
            base = statistics.median(r["framework_ms_per_job"] for r in runs[("overhead", "memory")])
            for r in done:
                r["added_ms_per_job"] = round(r["framework_ms_per_job"] - base, 3)
    rows = [median_of(runs[("overhead", kind)], "added_ms_per_job") for kind in ("memory", "sqlite", "postgres")]
    resumes = [median_of(runs[("resume", kind)], "resume_to_first_job_s") for kind in ("sqlite", "postgres")]
    print(f"medians of {args.repeat} runs each, the range in brackets")
    print(f"{'store':>9} {'jobs':>6} {'wall s':>8} {'ms/job':>8} {'added ms/job':>22} {'peak RSS MB':>12}")
    for r in rows:
        added = f"{r['added_ms_per_job']} [{r['added_ms_per_job_min']}, {r['added_ms_per_job_max']}]"
        print(f"{r['store']:>9} {r['jobs']:>6} {r['wall_s']:>8} {r['framework_ms_per_job']:>8} {added:>22} "
              f"{r['peak_rss_mb']:>12}")
    print()
    print(f"{'store':>9} {'finished jobs':>14} {'resume -> first job s':>26} {'resume total s':>15}")
    for r in resumes:
        first = f"{r['resume_to_first_job_s']} [{r['resume_to_first_job_s_min']}, {r['resume_to_first_job_s_max']}]"
        print(f"{r['store']:>9} {r['finished_jobs']:>14} {first:>26} {r['resume_total_s']:>15}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "durability", "repeat": args.repeat, "overhead": rows,
                                    "resume": resumes}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
