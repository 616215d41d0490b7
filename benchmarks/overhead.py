"""Framework overhead of one MinionS round: zero-latency fake models, the real
bubblewrap sandbox and the SQLite checkpointer and blob store, at 10, 100 and
1,000 jobs. Each size runs in a fresh process so peak memory is its own.

    .venv/bin/python benchmarks/overhead.py [--jobs 10 100 1000] [--out benchmarks/results/overhead.json]

Targets (issue 2): under 2 ms of framework time per job and under 300 MB peak at 1,000 jobs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def one(jobs: int) -> dict[str, float]:
    from fakes import FakeProvider, PromptFake
    from minionflow.graphs import RunSettings
    from minionflow.graphs.run import run_minions
    from workload import QUESTION, document, local, remote, timed_bwrap

    doc = document(jobs)
    settings = RunSettings(max_rounds=1, max_jobs_per_round=max(jobs, 10), local_concurrency=8)
    backend, spent = timed_bwrap()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = run_minions([doc], QUESTION, settings, checkpoint=Path(tmp),
                             models=FakeProvider(PromptFake(responder=remote), PromptFake(responder=local)),
                             sandbox=backend)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    rows = []
    for n in args.jobs:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    header = f"{'jobs':>6} {'wall s':>8} {'sandbox s':>10} {'framework ms/job':>17} {'peak RSS MB':>12} {'checkpoint DB KB':>17}"
    print(header)
    for r in rows:
        print(f"{r['jobs']:>6} {r['wall_s']:>8} {r['sandbox_s']:>10} {r['framework_ms_per_job']:>17} "
              f"{r['peak_rss_mb']:>12} {r['checkpoint_db_kb']:>17}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "overhead", "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
