"""Framework overhead of one MinionS round: zero-latency fake models, the real
bubblewrap sandbox and the SQLite checkpointer and blob store, at 10, 100 and
1,000 jobs. Each size runs in a fresh process so peak memory is its own, ``--repeats``
times (default 3), each run paired with the floors below measured just before or after it;
the table gives medians, the range of the framework time, and its ratio to the durable
floor of the same pair.

    .venv/bin/python benchmarks/overhead.py [--jobs 10 100 1000] [--repeats 3] [--out benchmarks/results/overhead.json]

Beside each size, three floors: a bare LangGraph graph that fans one ``Send`` task per
job out to a node that does nothing, on the same SqliteSaver settings (WAL,
synchronous=NORMAL), so each figure can be read against what LangGraph itself costs on
this machine for a task. "durable" runs it as minionflow runs (durability="sync": each
finished task's writes are saved as it finishes); "default" with durability="async",
LangGraph's own default (the writes saved on a background thread while the next step
runs); "no task writes" with durability="exit", which saves nothing until the run ends.
The issue quoted a raw fan-out at 0.52 ms a job without naming its durability: the table
shows each on the machine and at the hour of the measurement. minionflow sends a task
per several jobs (33 tasks at 1,000 jobs over 8 slots) and keeps each finished job
durable in its blob store, so it can go below the durable floor of a task per job.

Target (issue 10): at most 1.0 ms of framework time per job at 1,000 jobs, and peak
memory no higher than 178 MB.

A second table says where a job's time goes at the largest size: the map node run on
one thread as a single task of all the jobs (the round's own work per job, without
LangGraph's scheduling or other threads), then the same with an in-memory store instead
of the SQLite blob store (the difference: SQLite's commit of each job's write) and with
every call made through LangChain's ``BaseChatModel.invoke``, as before the node called
models directly where no callback handler listens (the difference: what that saves a
job; ``serving.models.call_direct``); and the tokenizer's load for the remote-only
estimate, once per run (from its cache file, as every run after the first).
"""

from __future__ import annotations

import argparse
import json
import operator
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from minionflow.graphs import RunContext
from typing_extensions import TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def one(jobs: int) -> dict[str, float]:
    from fakes import FakeProvider, PromptFake
    from minionflow.graphs import RunSettings
    from minionflow.graphs.run import run_minions
    from workload import QUESTION, document, local, remote, timed_bwrap

    doc = document(jobs)
    settings = RunSettings(local="embedded;slots=8", max_rounds=1, max_jobs_per_round=max(jobs, 10), local_concurrency=8)
    backend, spent = timed_bwrap()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = run_minions([doc], QUESTION, RunContext(settings=settings,
                                        models=FakeProvider(PromptFake(responder=remote), PromptFake(responder=local)),
                                        sandbox=backend),
                             checkpoint=Path(tmp))
        wall = time.perf_counter() - started
        db = (Path(tmp) / "checkpoints.sqlite").stat().st_size
    assert result.status == "answered", result.error
    assert result.usage is not None and result.usage.local.calls == jobs
    framework = wall - sum(spent)
    return {
        "jobs": jobs,
        "wall_s": round(wall, 3),
        "sandbox_s": round(sum(spent), 3),
        "framework_ms_per_job": round(1000 * framework / jobs, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "checkpoint_db_kb": round(db / 1024, 1),
    }


def _node_ms_per_job(jobs: int, store: str, through_invoke: bool) -> float:
    """The map node over ``jobs`` jobs, one task on this thread, in round "round:r1"."""
    from fakes import FakeProvider, PromptFake, in_round
    from langgraph.runtime import Runtime
    from langgraph.store.memory import InMemoryStore
    from minionflow.graphs import RunContext, RunSettings
    from minionflow.nodes import initial_state
    from minionflow.nodes.parallel_minion_map import parallel_minion_map
    from minionflow.nodes.sandboxed_execute import sandboxed_execute
    from minionflow.serving import models as model_clients
    from minionflow.storage.blobstore import SqliteBlobStore
    from workload import CODE, QUESTION, document, local, remote, timed_bwrap

    direct = model_clients.callable_direct
    if through_invoke:  # every call made as for a model that needs invoke's work
        model_clients.callable_direct = lambda chat: False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runtime = Runtime(store=SqliteBlobStore(Path(tmp) / "blobs.sqlite") if store == "sqlite" else InMemoryStore())
            settings = RunSettings(local="embedded;slots=8", max_rounds=1, max_jobs_per_round=jobs, local_concurrency=8)
            state = initial_state(runtime.store, [document(jobs)], QUESTION, settings)
            round_input = {k: state[k] for k in ("settings", "settings_ref", "task", "documents", "rounds", "scratchpad")}
            code = CODE.split("```python\n")[1].split("```")[0]
            backend, _ = timed_bwrap()
            runtime = Runtime(store=runtime.store, context=RunContext(
                settings=settings, models=FakeProvider(PromptFake(responder=remote), PromptFake(responder=local)),
                sandbox=backend))
            made = sandboxed_execute({**round_input, "code": code, "code_errors": []}, runtime)
            node = parallel_minion_map
            task = {"jobs_ref": made["jobs_ref"], "index": 0, "count": jobs}
            started = time.perf_counter()
            out = in_round("parts", node, task, runtime)
            elapsed = time.perf_counter() - started
    finally:
        model_clients.callable_direct = direct
    assert len(out["job_results"]) == jobs
    return round(1000 * elapsed / jobs, 3)


def parts(jobs: int) -> dict[str, float]:
    from minionflow.serving import tokens

    tokens._encoding()  # the cache file is written (a first run's parse)
    tokens._loaded_encoding.cache_clear()
    started = time.perf_counter()
    tokens._encoding()
    load = time.perf_counter() - started
    _node_ms_per_job(50, "sqlite", False)  # warm: first-call costs (schemas, imports) are not a job's
    variants = {"node_ms_per_job": ("sqlite", False), "node_in_memory_store_ms_per_job": ("memory", False),
                "node_through_invoke_ms_per_job": ("sqlite", True)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):  # interleaved, the median of three: this machine's noise is 20-30% a run
        for name, (store, through_invoke) in variants.items():
            times[name].append(_node_ms_per_job(jobs, store, through_invoke))
    return {"jobs": jobs, **{name: sorted(t)[1] for name, t in times.items()}, "tokenizer_load_s": round(load, 3)}


class FloorState(TypedDict, total=False):
    n: int
    done: Annotated[list[int], operator.add]


def floor(jobs: int, durability: Literal["sync", "async", "exit"] = "sync") -> float:
    """ms per job of a bare Send fan-out with the same checkpointer settings."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    builder = StateGraph(FloorState)
    builder.add_node("job", lambda inp: {"done": [inp["i"]]})
    builder.add_node("end", lambda state: {})
    builder.add_conditional_edges(START, lambda state: [Send("job", {"i": i}) for i in range(state["n"])], ["job"])
    builder.add_edge("job", "end")
    builder.add_edge("end", END)
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "checkpoints.sqlite", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        graph = builder.compile(checkpointer=SqliteSaver(conn))
        started = time.perf_counter()
        for _ in graph.stream({"n": jobs}, {"configurable": {"thread_id": "floor"}, "max_concurrency": jobs + 8},
                              durability=durability):
            pass
        return round(1000 * (time.perf_counter() - started) / jobs, 3)


TARGET_MS = 1.0  # issue 10, at 1,000 jobs
TARGET_MB = 178.0


def _subprocess_json(*flags: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(jobs: int, repeats: int) -> dict[str, Any]:
    """``repeats`` pairs of a run and the floors, each in a fresh process, the pair's order
    alternating (the first of two fresh processes ran slower or faster by up to 0.1 ms a
    job on this machine); the medians (of peak memory, the highest), the framework time's
    range, and the median of each pair's framework time over its durable floor (the
    machine's speed moved the two together, 1.5x within an hour)."""
    pairs = []
    for k in range(repeats):
        first, second = ("--one", "--floor") if k % 2 == 0 else ("--floor", "--one")
        measured = {flag: _subprocess_json(flag, str(jobs)) for flag in (first, second)}
        pairs.append({**measured["--one"], **measured["--floor"]})
    row: dict[str, Any] = {key: round(statistics.median(p[key] for p in pairs), 3) for key in pairs[0]}
    framework = [p["framework_ms_per_job"] for p in pairs]
    row.update(jobs=jobs, framework_min=min(framework), framework_max=max(framework),
               peak_rss_mb=max(p["peak_rss_mb"] for p in pairs),  # the highest: the target is a ceiling
               ratio_to_durable_floor=round(statistics.median(p["framework_ms_per_job"] / p["floor_ms_per_job"]
                                                              for p in pairs), 2),
               runs=pairs)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each size (medians; default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parts:
        print(json.dumps(parts(args.parts)))
        return
    if args.one:
        print(json.dumps(one(args.one)))
        return
    if args.floor:
        print(json.dumps({"floor_ms_per_job": floor(args.floor), "floor_default_ms_per_job": floor(args.floor, "async"),
                          "floor_no_task_writes_ms_per_job": floor(args.floor, "exit")}))
        return
    rows = [measure(n, args.repeats) for n in args.jobs]
    header = (f"{'jobs':>6} {'wall s':>8} {'sandbox s':>10} {'framework ms/job':>24} {'floor, durable':>15} "
              f"{'floor, default':>15} {'floor, no task writes':>22} {'÷ durable floor':>16} {'peak RSS MB':>12} "
              f"{'checkpoint DB KB':>17}")
    print(header)
    for r in rows:
        spread = f"{r['framework_ms_per_job']} ({r['framework_min']}-{r['framework_max']})"
        print(f"{r['jobs']:>6} {r['wall_s']:>8} {r['sandbox_s']:>10} {spread:>24} "
              f"{r['floor_ms_per_job']:>15} {r['floor_default_ms_per_job']:>15} "
              f"{r['floor_no_task_writes_ms_per_job']:>22} {r['ratio_to_durable_floor']:>16} {r['peak_rss_mb']:>12} "
              f"{r['checkpoint_db_kb']:>17}")
    largest = max(args.jobs)
    top = next(r for r in rows if r["jobs"] == largest)
    if largest == 1000:
        verdict = "met" if top["framework_ms_per_job"] <= TARGET_MS and top["peak_rss_mb"] <= TARGET_MB else "NOT met"
        print(f"\ntarget at 1,000 jobs (at most {TARGET_MS} ms a job, {TARGET_MB} MB): {verdict} "
              f"(median of {args.repeats}: {top['framework_ms_per_job']} ms; highest peak {top['peak_rss_mb']} MB)")
    split = _subprocess_json("--parts", str(largest))
    node = split["node_ms_per_job"]
    print(f"\nwhere a job's time goes at {largest} jobs (the map node alone, one task on one thread), ms a job:")
    print(f"{'node':>8} {'SQLite writes':>14} {'the rest':>9} {'through invoke':>15}   tokenizer load, once a run")
    sqlite_ms = round(node - split["node_in_memory_store_ms_per_job"], 3)
    print(f"{node:>8} {sqlite_ms:>14} {round(node - sqlite_ms, 3):>9} {split['node_through_invoke_ms_per_job']:>15}   "
          f"{split['tokenizer_load_s']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "overhead", "rows": rows, "parts": split}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
