"""Wall time of a `minionflow` command that calls no model: start, parse, answer, exit.
Every command pays it, and so does every CLI process of the test suite.

    .venv/bin/python benchmarks/cli_start.py [--runs 7] [--out benchmarks/results/cli_start.json]

For each command, the median and the fastest of ``--runs`` runs, and, for comparison, the
same interpreter importing ``minionflow.cli.main`` and leaving with ``os._exit`` (the
imports alone, without Python's collections at exit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(args: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli_start.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MINIONFLOW_HOME": home}
        env.pop("OPENAI_API_KEY", None)
        cli = str(BIN / "minionflow")
        commands = {
            "minionflow --version": [cli, "--version"],
            "minionflow run MISSING -q Q (bad input, exit 2)": [cli, "run", str(Path(home) / "missing.txt"), "-q", "Q"],
            "minionflow runs (an empty data folder)": [cli, "runs"],
            "imports only (os._exit)": [sys.executable, "-c", "import os, minionflow.cli.main; os._exit(0)"],
        }
        rows = {name: timed(command, env, args.runs) for name, command in commands.items()}
    width = max(len(name) for name in rows)
    print(f"{'command':<{width}}  median   fastest   ({args.runs} runs)")
    for name, row in rows.items():
        print(f"{name:<{width}}  {row['median_s']:.2f} s   {row['min_s']:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "commands": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
