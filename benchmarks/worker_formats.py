"""How well a local model does a minion's job, per reply format: on the bundled
suite, every chunk (of the built-in plan) that holds an answer, and a sample of
chunks that do not, asked the item's question.

    .venv/bin/python benchmarks/worker_formats.py [--local embedded] [--formats json,text]
        [--chunk-tokens 1000] [--decoys 2] [--suite evals/suite.jsonl] [--out benchmarks/results/worker_formats.json]

Per format:
- **hit**: on a chunk that holds (part of) the answer, the minion's answer contains it;
- **grounded hit**: a hit that passes the grounding check (it would be forwarded);
- **false grounded**: on a chunk that does not hold the answer, a non-abstaining
  output that passes the grounding check (noise the supervisor would read);
- **abstained** on decoy chunks, **failed** replies, and seconds per job.

This measures the worker alone, with no supervisor: which format the embedded
model should use (``ModelSpec.reply``) is decided here and by ``minionflow eval``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from minionflow.contracts.settings import ModelSpec, RunSettings
from minionflow.contracts.state import JobRecord
from minionflow.evaluation.matchers import contains, normalize, numbers, numeric
from minionflow.evaluation.suite import SuiteItem, load_suite
from minionflow.nodes.parallel_minion_map import ask_worker, check_output, worker_messages
from minionflow.nodes.support.outputs import is_abstention
from minionflow.sandbox.chunking import chunk_by_tokens
from minionflow.serving.models import DefaultModelProvider
from minionflow.storage.documents import load_document

ROOT = Path(__file__).resolve().parent.parent


def parts(item: SuiteItem) -> list[list[str]]:
    """The answer's parts, each a list of alternatives."""
    if item.match == "all":
        return [[p] if isinstance(p, str) else list(p) for p in item.answers]
    return [[a for a in item.answers if isinstance(a, str)]]


def holds(text: str, alternative: str, item: SuiteItem) -> bool:
    if item.match == "numeric":
        return numeric(text, alternative, item.tolerance)
    if numbers(alternative) and normalize(alternative).replace(" ", "").isdigit():
        return f" {normalize(alternative)} " in f" {normalize(text)} "
    return contains(text, alternative)


def chunk_parts(chunk: str, item: SuiteItem) -> list[list[str]]:
    return [p for p in parts(item) if any(holds(chunk, alt, item) for alt in p)]


def job(task: str) -> JobRecord:
    return JobRecord(job_id="bench", round=1, attempt=1, chunk_ref="", chunk_chars=0, chunk_id=0, task_id=0,
                     task=task, advice="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", default="embedded")
    parser.add_argument("--formats", default="json,text")
    parser.add_argument("--chunk-tokens", type=int, default=1000)
    parser.add_argument("--decoys", type=int, default=2, help="chunks without the answer per item")
    parser.add_argument("--suite", default=str(ROOT / "evals" / "suite.jsonl"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--text-system", default=None, help="try another system prompt for text replies (a file)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "worker_formats.json"))
    args = parser.parse_args()

    suite = load_suite(args.suite)
    items = [i for i in suite.items if i.scored and i.match != "abstain"][: args.limit]
    rng = random.Random(7)
    cases: list[dict[str, Any]] = []  # (item, chunk, parts the chunk holds)
    for item in items:
        text = "\n\n".join(load_document(p).text for p in suite.document_paths(item))
        chunks = chunk_by_tokens(text, args.chunk_tokens)
        gold = [(c, chunk_parts(c, item)) for c in chunks]
        cases += [{"item": item, "chunk": c, "parts": p} for c, p in gold if p]
        decoys = [c for c, p in gold if not p]
        cases += [{"item": item, "chunk": c, "parts": []} for c in rng.sample(decoys, min(args.decoys, len(decoys)))]

    settings = RunSettings(chunk_tokens=args.chunk_tokens)
    if args.text_system:
        from minionflow.nodes.support import prompts

        prompts.WORKER_TEXT_SYSTEM = Path(args.text_system).read_text().strip()
    rows = []
    provider = DefaultModelProvider()
    for reply in args.formats.split(","):
        spec = ModelSpec.parse(f"{args.local};reply={reply}")
        client = provider.client(spec, "local", settings.local_max_tokens)
        stats = {"format": reply, "answer_chunks": 0, "hit": 0, "grounded_hit": 0, "decoy_chunks": 0,
                 "false_grounded": 0, "decoy_abstained": 0, "failed": 0}
        seconds: list[float] = []
        records: list[dict[str, Any]] = []
        for case in cases:
            item, chunk = case["item"], case["chunk"]
            started = time.monotonic()
            output, _calls, _error = ask_worker(client, worker_messages(job(item.question), chunk, reply), reply)
            seconds.append(time.monotonic() - started)
            if output is None:
                stats["failed"] += 1
            answering = output is not None and output.answer is not None and not is_abstention(output.answer)
            grounding = check_output(output, chunk, item.question, settings) if answering and output else None
            grounded = grounding is not None and grounding.grounded
            records.append({"item": item.id, "gold": bool(case["parts"]), "chunk": chunk,
                            "answer": output.answer if output else None, "citation": output.citation if output else None,
                            "grounded": grounded, "support": grounding.answer_support if grounding else None})
            if case["parts"]:
                stats["answer_chunks"] += 1
                answer = output.answer if answering and output else ""
                hit = any(holds(answer or "", alt, item) for part in case["parts"] for alt in part)
                stats["hit"] += hit
                stats["grounded_hit"] += hit and grounded
            else:
                stats["decoy_chunks"] += 1
                stats["decoy_abstained"] += not answering
                stats["false_grounded"] += grounded
        stats["seconds_per_job"] = round(statistics.mean(seconds), 2) if seconds else 0.0
        rows.append({**stats, "cases": records})

    header = f"{'format':8} {'hit':>10} {'grounded hit':>13} {'false grounded':>15} {'decoys abstained':>17} {'failed':>7} {'s/job':>6}"
    print(f"{len(items)} questions, {args.chunk_tokens}-token chunks, local {args.local}")
    print(header)
    for r in rows:
        r = {k: v for k, v in r.items() if k != "cases"}
        n, d = r["answer_chunks"], r["decoy_chunks"]
        print(f"{r['format']:8} {r['hit']:>4}/{n:<5} {r['grounded_hit']:>6}/{n:<6} {r['false_grounded']:>8}/{d:<6} "
              f"{r['decoy_abstained']:>10}/{d:<6} {r['failed']:>7} {r['seconds_per_job']:>6}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"local": args.local, "chunk_tokens": args.chunk_tokens, "questions": len(items),
                               "suite": str(Path(args.suite).name), "rows": rows}, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
