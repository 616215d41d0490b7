"""Local-model throughput of one MinionS round: the embedded model (SmolLM2-135M on
llama-cpp-python's server) answering 3 tasks over N chunks of the sample report, on
this machine's cores, in the two orders a round's jobs can be sent:

* task-major: every chunk for task 1, then every chunk for task 2, ... (how supervisors
  often write ``prepare_jobs``, and how jobs were sent before ``chunk_major``);
* chunk-major: every task for chunk 1, then chunk 2, ... (``sandboxed_execute.chunk_major``,
  what minionflow now sends). The worker prompt holds the chunk before the task, and
  llama-cpp-python reuses the prompt prefix of its last request, so a chunk is read once
  for all its tasks.

These drive the real ``parallel_minion_map`` node with the tasks ``route_jobs`` sends
(several jobs each, taken in turn; each task on a thread of its own, as LangGraph's
executor runs ``Send`` tasks), through the pool of local endpoints (serving.pool), with
the embedded server's default of one request at a time. Two more chunk-major rows change
the endpoints: ``embedded;slots=4`` (four in flight, the server picks their order) and
``embedded;servers=2`` (a pool of two servers, each with half the cores). Then a whole
run (``run_minions``, bwrap sandbox, a fake supervisor whose code writes the jobs
task-major), to show the graph sends them chunk-major, and the same run again on the same
data folder, where the job cache answers every job. After a warm-up call per server;
``--repeats`` alternates the rows; ``--only ROW ...`` runs only those rows of the node.

    .venv/bin/python benchmarks/throughput.py [--chunks N] [--tasks 3] [--only ROW ...] [--out benchmarks/results/throughput.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from minionflow.graphs import RunContext

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SAMPLE = ROOT / "samples" / "northwind-annual-report-2025.md"
TASKS = [
    "What was the company's total revenue for the year?",
    "Who is the chief executive officer?",
    "Which facility is the largest, and where is it?",
    "How many employees does the company have?",
    "What risks does the report name?",
]
CHUNK_TOKENS = 1000  # the built-in plan's default


def chunks(n: int) -> list[str]:
    """The sample's first ``n`` chunks (0: all of them)."""
    from minionflow.sandbox.chunking import chunk_by_tokens

    every = chunk_by_tokens(SAMPLE.read_text(), CHUNK_TOKENS)
    return every[:n] if n else every


def batch(store: Any, texts: list[str], tasks: list[str], order: str, local: str) -> tuple[str, int, Any]:
    from minionflow.contracts.settings import RunSettings
    from minionflow.contracts.state import JobBatch, JobRecord
    from minionflow.storage.store import put_json, put_texts

    settings = RunSettings(local=local, local_concurrency=4, job_cache=False)
    refs = put_texts(store, texts)
    pairs = [(c, t) for t in range(len(tasks)) for c in range(len(texts))]
    if order == "chunk-major":
        pairs.sort()
    jobs = [JobRecord(job_id=f"j{c}-{t}", round=1, attempt=1, chunk_ref=refs[c], chunk_chars=len(texts[c]),
                      chunk_id=c, task_id=t, task=tasks[t], advice="") for c, t in pairs]
    ref = put_json(store, JobBatch(settings_ref=put_json(store, settings.model_dump(mode="json")), jobs=jobs))
    return ref, len(jobs), settings


def by_node(provider: Any, texts: list[str], tasks: list[str], order: str, local: str = "embedded") -> dict[str, Any]:
    from langgraph.runtime import Runtime
    from langgraph.store.memory import InMemoryStore
    from minionflow.graphs import RunContext
    from minionflow.nodes.parallel_minion_map import parallel_minion_map
    from minionflow.nodes.sandboxed_execute import route_jobs
    from minionflow.storage.store import get_json

    store = InMemoryStore()
    ref, count, settings = batch(store, texts, tasks, order, local)
    node = parallel_minion_map
    runtime = Runtime(store=store, context=RunContext(settings=settings, models=provider))
    # the tasks the graph sends, each on a thread of its own
    sends = route_jobs({"settings": settings.model_dump(mode="json"), "jobs_ref": ref, "job_count": count}, runtime)
    assert isinstance(sends, list)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(sends)) as pool:
        updates = list(pool.map(lambda send: node(send.arg, runtime), sends))
    wall = time.perf_counter() - started
    results = [get_json(store, r["ref"]) for u in updates for r in u["job_results"]]
    prompt = sum(u["prompt_tokens"] for r in results for u in r["usage"])
    per_endpoint: dict[str, int] = {}
    for r in results:
        per_endpoint[r["endpoint"]] = per_endpoint.get(r["endpoint"], 0) + 1
    return {"jobs": count, "wall_s": wall, "failed": sum(r["status"] != "ok" for r in results), "prompt_tokens": prompt,
            "answers": {r["job_id"]: r["answer"] for r in results}, "jobs_per_endpoint": per_endpoint}


def by_graph(texts: list[str], tasks: list[str], home: Path, thread: str) -> dict[str, Any]:
    from fakes import FakeProvider, PromptFake
    from minionflow.graphs import RunSettings
    from minionflow.graphs.run import run_minions
    from minionflow.serving.models import DefaultModelProvider
    from minionflow.storage.documents import LoadedDocument

    code = ("```python\ndef prepare_jobs(context, prev_job_manifests, prev_job_outputs):\n"
            f"    tasks = {tasks!r}\n"
            "    chunks = context[0].split('\\n\\n<<>>\\n\\n')\n"
            "    return [JobManifest(chunk=c, task=t, chunk_id=i, task_id=k) "
            "for k, t in enumerate(tasks) for i, c in enumerate(chunks)]\n```")

    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return code
        return json.dumps({"decision": "provide_final_answer", "answer": "x", "explanation": "e",
                           "feedback": None, "scratchpad": None})

    class Provider(FakeProvider):
        def __init__(self) -> None:
            super().__init__(PromptFake(responder=remote), PromptFake(responder=remote))
            self.real = DefaultModelProvider()

        def client(self, spec, role, max_tokens):  # type: ignore[no-untyped-def]
            return self.real.client(spec, role, max_tokens) if role == "local" else super().client(spec, role, max_tokens)

    doc = LoadedDocument(title="sample.md", text="\n\n<<>>\n\n".join(texts), pages=1)
    settings = RunSettings(local="embedded", max_rounds=1, max_jobs_per_round=100,
                           max_chunk_chars=12_000, sandbox="bwrap")
    started = time.perf_counter()
    result = run_minions([doc], "What does the report say?", RunContext(settings=settings, models=Provider()),
                         thread_id=thread, checkpoint=home)
    wall = time.perf_counter() - started
    assert result.usage is not None, result.error
    local = result.usage.local
    return {"jobs": local.calls + local.cache_hits, "local_calls": local.calls, "cache_hits": local.cache_hits,
            "wall_s": wall, "failed": local.failed_calls, "prompt_tokens": local.prompt_tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=0, help="the sample's first N chunks (default: all)")
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows of the node (e.g. chunk-major), "
                        "not the graph runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "throughput.json")
    args = parser.parse_args()
    from langchain_core.messages import HumanMessage
    from minionflow.contracts.settings import RunSettings
    from minionflow.serving.models import DefaultModelProvider

    texts, tasks = chunks(args.chunks), TASKS[: args.tasks]
    provider = DefaultModelProvider()
    for spec in [*RunSettings().local_endpoints, *RunSettings(local="embedded;servers=2").local_endpoints]:
        provider.client(spec, "local", 256).text([HumanMessage("Say hello.")])  # warm-up
    graph, again = "graph (run_minions)", "graph again (job cache)"
    variants = {"task-major": ("task-major", "embedded"), "chunk-major": ("chunk-major", "embedded"),
                "chunk-major, 4 in flight": ("chunk-major", "embedded;slots=4"),
                "chunk-major, 2 servers": ("chunk-major", "embedded;servers=2")}
    if args.only:
        variants = {name: variants[name] for name in args.only}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*variants, *([] if args.only else [graph, again])]}
    for _ in range(args.repeats):
        for name, (order, local) in variants.items():
            runs[name].append(by_node(provider, texts, tasks, order, local))
            print(f"{name}: {runs[name][-1]['wall_s']:.1f} s", flush=True)
        if args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:  # one data folder: the second run finds the first's jobs
            runs[graph].append(by_graph(texts, tasks, Path(tmp), "first"))
            runs[again].append(by_graph(texts, tasks, Path(tmp), "second"))
    rows = []
    for order, measured in runs.items():
        walls = [m["wall_s"] for m in measured]
        jobs = measured[0]["jobs"]
        rows.append({"order": order, "chunks": len(texts), "tasks": len(tasks), "jobs": jobs,
                     "wall_s": round(statistics.median(walls), 2), "walls_s": [round(w, 2) for w in walls],
                     "s_per_job": round(statistics.median(walls) / jobs, 3),
                     "failed": max(m["failed"] for m in measured),
                     "local_calls": measured[0].get("local_calls", jobs), "cache_hits": measured[0].get("cache_hits", 0),
                     "jobs_per_endpoint": measured[0].get("jobs_per_endpoint"),
                     "prompt_tokens": measured[0]["prompt_tokens"]})
    # the order changes which requests reuse a cached prefix, not what is asked: the replies should not change
    first = runs["task-major"][0]["answers"] if "task-major" in runs else {}
    same = [sum(m["answers"][k] == v for k, v in first.items()) / len(first) for m in runs.get("chunk-major", [])
            if first]
    base = rows[0]["wall_s"]
    print(f"{'order':<25} {'jobs':>5} {'local calls':>12} {'wall s (median)':>16} {'s/job':>7} {'speed-up':>9} "
          f"{'failed':>7}  runs")
    for r in rows:
        r["speedup"] = round(base / r["wall_s"], 2)
        print(f"{r['order']:<25} {r['jobs']:>5} {r['local_calls']:>12} {r['wall_s']:>16} {r['s_per_job']:>7} "
              f"{r['speedup']:>8}x {r['failed']:>7}  {r['walls_s']}")
    cached = round(rows[-2]["wall_s"] / rows[-1]["wall_s"], 1) if not args.only else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "throughput", "model": "embedded (SmolLM2-135M-Instruct)",
                                    "chunk_tokens": CHUNK_TOKENS, "slots": "1 per embedded server unless the row says", "rows": rows,
                                    "chunk_major_same_replies": same, "job_cache_speedup": cached}, indent=2) + "\n")
    if cached is not None:
        print(f"the same run again: {rows[-1]['local_calls']} local calls, {cached}x faster than the first (job cache)")
    if same:
        print(f"replies identical to the first task-major run's: {', '.join(f'{s:.0%}' for s in same)} (chunk-major runs)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
