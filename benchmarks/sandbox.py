"""Time per execution of a typical ``prepare_jobs`` over a 100 KB document, for each
sandbox backend: median and p95 over repeated runs.

    .venv/bin/python benchmarks/sandbox.py [--runs 30] [--out benchmarks/results/sandbox.json]

Targets (issue 3): bubblewrap under 50 ms median, Docker under 300 ms median on overlay2.

It also times code that never ends (``time.sleep(3600)`` under a 1.5 s limit): how long
past its limit the execution returns, the kill, the wait and the clean-up included. The
escape suite's allowance for that (tests/test_sandbox_escape.py, ``STOP_MARGIN_S``) is
several times the worst of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from minionflow.contracts.settings import SandboxLimits
from minionflow.sandbox import BwrapBackend, DockerBackend, ExecutionRequest, SandboxStatus

ROOT = Path(__file__).resolve().parent.parent

CODE = """
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    tasks = ["Which facility was closed, and when?", "What was total revenue?", "Who is the CFO?"]
    jobs = []
    for doc in context:
        for i, chunk in enumerate(chunk_by_section(doc, max_tokens=1000)):
            for t, task in enumerate(tasks):
                jobs.append(JobManifest(chunk=chunk, task=task, chunk_id=i, task_id=t))
    return jobs
"""


def measure(backend, doc: str, runs: int, label: str) -> dict[str, float | int | str]:  # type: ignore[no-untyped-def]
    request = ExecutionRequest(code=CODE, context=[doc], max_jobs=5000)
    limits = SandboxLimits()
    backend.execute(request, limits)  # warm-up (page cache, image layers)
    times = []
    jobs = 0
    for _ in range(runs):
        started = time.perf_counter()
        result = backend.execute(request, limits)
        times.append(time.perf_counter() - started)
        assert result.status is SandboxStatus.OK, result.describe()
        jobs = len(result.jobs)
    times.sort()
    return {
        "backend": label,
        "runs": runs,
        "jobs": jobs,
        "median_ms": round(1000 * statistics.median(times), 1),
        "p95_ms": round(1000 * times[max(int(0.95 * len(times)) - 1, 0)], 1),
        "min_ms": round(1000 * times[0], 1),
    }


NEVER_ENDS = "def prepare_jobs(context, prev_job_manifests, prev_job_outputs):\n    import time\n    time.sleep(3600)\n"


def measure_stop(backend, runs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Seconds past a 1.5 s limit at which an execution of code that never ends returns."""
    limits = SandboxLimits(timeout_s=1.5)
    past = []
    for _ in range(runs):
        started = time.perf_counter()
        result = backend.execute(ExecutionRequest(code=NEVER_ENDS, context=["doc"]), limits)
        past.append(time.perf_counter() - started - limits.timeout_s)
        assert result.status is SandboxStatus.TIMEOUT, result.describe()
    return {"past_limit_median_ms": round(1000 * statistics.median(past), 1), "past_limit_max_ms": round(1000 * max(past), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--stop-runs", type=int, default=5, help="runs of the code that never ends")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sandbox.json")
    args = parser.parse_args()
    doc = (ROOT / "samples" / "northwind-annual-report-2025.md").read_text(encoding="utf-8")[:100_000]
    rows = []
    # the unfiltered bwrap row shows what the seccomp filter costs; it is not a configuration to use
    backends = {"bwrap": BwrapBackend(), "bwrap-no-seccomp": BwrapBackend(seccomp=False), "docker": DockerBackend()}
    for label, backend in backends.items():
        backend.check()
        rows.append({**measure(backend, doc, args.runs, label), **measure_stop(backend, args.stop_runs)})
    print(f"{'backend':>16} {'runs':>5} {'jobs':>5} {'median ms':>10} {'p95 ms':>8} {'min ms':>8}"
          f" {'past limit ms (median / max)':>29}")
    for r in rows:
        print(f"{r['backend']:>16} {r['runs']:>5} {r['jobs']:>5} {r['median_ms']:>10} {r['p95_ms']:>8} {r['min_ms']:>8}"
              f" {r['past_limit_median_ms']:>17} / {r['past_limit_max_ms']:>7}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "sandbox", "document_bytes": len(doc.encode()), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
