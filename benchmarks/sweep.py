"""Accuracy against local compute: the bundled suite (or a part of it) run by MinionS
across samples per task and chunk sizes, the shape of the paper's figure on local
compute (section 6), on this machine's models.

    .venv/bin/python benchmarks/sweep.py [--samples 1,3,5] [--chunk-tokens 500,1000,2000]
        [--tags clinical,manual] [--limit N] [--suite evals/suite.jsonl]
        [--out benchmarks/results/sweep]

Each point is an eval of its own (``minionflow eval``'s runner, the demo's defaults: no
API key, so the embedded model in both roles, unless MINIONFLOW_REMOTE / MINIONFLOW_LOCAL
say otherwise), in ``OUT/s{samples}-c{chunk}[-tags]/``: run again, it resumes. The job cache
is off, so every point's local tokens are what its jobs cost (with it on, a point would
reuse the replies of the last). Writes ``OUT/sweep.json`` (every point: accuracy, its
95% interval, local and remote tokens, p50 and p95 per question, the loss funnel),
``OUT/sweep.md`` (the table) and ``OUT/sweep.png`` (accuracy against local tokens per
question, a line per chunk size, a point per samples value). Run it alone on the machine:
its times are part of what it reports.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from minionflow.contracts.settings import default_settings
from minionflow.evaluation.report import ProtocolSummary, summarize
from minionflow.evaluation.runner import EvalPlan, run_eval
from minionflow.evaluation.suite import load_suite
from minionflow.graphs.protocols import get_protocol

ROOT = Path(__file__).resolve().parent.parent


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def point(suite_path: Path, samples: int, chunk: int, tags: list[str], limit: int | None, out: Path) -> dict[str, Any]:
    suite = load_suite(suite_path)
    if tags:
        suite = suite.model_copy(update={"items": [i for i in suite.items if set(tags) & set(i.tags)]})
    settings = default_settings({"samples": samples, "chunk_tokens": chunk, "job_cache": False},
                                min_rounds=get_protocol("minions").min_rounds)
    folder = out / (f"s{samples}-c{chunk}" + (f"-{'+'.join(tags)}" if tags else ""))
    plan = EvalPlan(suite=suite, protocols=["minions"], settings={"minions": settings}, out_dir=folder, limit=limit)
    results = run_eval(plan)
    row: ProtocolSummary = summarize(suite.name, len(plan.items), False, ["minions"], results).protocols[0]
    questions = max(row.items, 1)
    return {
        "samples": samples, "chunk_tokens": chunk, "questions": row.items, "correct": row.correct,
        "scored": row.scored, "accuracy": row.accuracy, "ci_low": row.ci_low, "ci_high": row.ci_high,
        "local_tokens": row.local_tokens, "local_tokens_per_question": round(row.local_tokens / questions),
        "remote_tokens": row.remote_prompt_tokens + row.remote_completion_tokens,
        "p50_s": row.latency_p50_s, "p95_s": row.latency_p95_s, "funnel": row.funnel, "folder": str(folder),
        "remote": settings.remote.label, "local": settings.local.label,
    }


def table(points: list[dict[str, Any]]) -> str:
    lines = ["| samples | chunk tokens | accuracy | 95% CI | correct | local tokens / question | remote tokens | p50 | p95 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        acc = "-" if p["accuracy"] is None else f"{100 * p['accuracy']:.1f}%"
        ci = "-" if p["ci_low"] is None else f"{100 * p['ci_low']:.0f}–{100 * p['ci_high']:.0f}%"
        lines.append(f"| {p['samples']} | {p['chunk_tokens']:,} | {acc} | {ci} | {p['correct']}/{p['scored']} | "
                     f"{p['local_tokens_per_question']:,} | {p['remote_tokens']:,} | {p['p50_s'] or 0:.1f}s | "
                     f"{p['p95_s'] or 0:.1f}s |")
    return "\n".join(lines) + "\n"


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for chunk in sorted({p["chunk_tokens"] for p in points}):
        line = sorted((p for p in points if p["chunk_tokens"] == chunk), key=lambda p: p["samples"])
        xs = [p["local_tokens_per_question"] for p in line]
        ys = [100 * (p["accuracy"] or 0.0) for p in line]
        ax.plot(xs, ys, marker="o", label=f"{chunk:,}-token chunks")
        for p, x, y in zip(line, xs, ys, strict=True):
            ax.annotate(f"{p['samples']}x", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("local tokens per question (log)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("MinionS: accuracy against local compute (samples per task x chunk size)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, default=ROOT / "evals" / "suite.jsonl")
    parser.add_argument("--samples", type=ints, default=[1, 3, 5])
    parser.add_argument("--chunk-tokens", type=ints, default=[500, 1000, 2000])
    parser.add_argument("--tags", type=lambda t: [x for x in t.split(",") if x], default=[],
                        help="only the questions with one of these tags (e.g. clinical,manual)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    points = []
    for chunk in args.chunk_tokens:
        for samples in args.samples:
            points.append(point(args.suite, samples, chunk, args.tags, args.limit, args.out))
            (args.out / "sweep.json").write_text(json.dumps({"points": points}, indent=2) + "\n")
            print(table(points[-1:]).splitlines()[-1], flush=True)
    (args.out / "sweep.md").write_text(table(points))
    plot(points, args.out / "sweep.png")
    print(table(points))


if __name__ == "__main__":
    main()
