"""Make the picture of ``minionflow report`` in docs/runs.md: a two-round MinionS run over the
first chunks of the sample report, the embedded model (SmolLM2-135M) as the minions and a
scripted supervisor (round 1 asks where the largest facility is, round 2 who the chief
executive is), then its report page, and a screenshot of that page in headless Chromium
with the network off.

    .venv/bin/python scripts/report_example.py [--chunks 8] [--out docs/report.png]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from minionflow.graphs import RunContext

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SAMPLE = ROOT / "samples" / "northwind-annual-report-2025.md"
SEPARATOR = "\n\n<<>>\n\n"
CODE = """```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    chunks = context[0].split({sep!r})
    task = "Who is the chief executive officer?" if prev_job_outputs else "Which facility is the largest, and where is it?"
    return [JobManifest(chunk=c, task=task, chunk_id=i, task_id=0) for i, c in enumerate(chunks)]
```"""


def supervisor(prompt: str) -> str:
    if "Write prepare_jobs now" in prompt:
        return CODE.format(sep=SEPARATOR)
    answers = re.findall(r"answer: (.+)", prompt)  # the minions' answers, best first
    if "This is the last round" not in prompt:  # round 1: keep the facility, ask for the chief executive
        return json.dumps({"decision": "request_additional_info", "answer": "not yet", "explanation": "one more question",
                           "feedback": "now find the chief executive", "scratchpad": answers[0] if answers else None})
    facility = re.search(r"Your scratchpad from earlier rounds:\n(.+)", prompt)
    found = [facility.group(1) if facility else None, answers[0] if answers else None]
    return json.dumps({"decision": "provide_final_answer", "answer": " / ".join(f for f in found if f) or "unknown",
                       "explanation": "the first grounded answer of each round", "feedback": None, "scratchpad": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args()
    from fakes import PromptFake
    from minionflow.cli.report import render_report
    from minionflow.graphs import RunSettings
    from minionflow.graphs.run import run_minions
    from minionflow.graphs.threads import show_thread, thread_graph
    from minionflow.sandbox.chunking import chunk_by_tokens
    from minionflow.serving.models import DefaultModelProvider, ModelClient
    from minionflow.storage.documents import LoadedDocument
    from minionflow.storage.persistence import open_persistence

    class Provider(DefaultModelProvider):  # the scripted supervisor; the minions are the embedded model
        def client(self, spec, role, max_tokens):  # type: ignore[no-untyped-def]
            if role == "remote":
                return ModelClient(spec, PromptFake(responder=supervisor), method="json_object_schema")
            return super().client(spec, role, max_tokens)

    chunks = chunk_by_tokens(SAMPLE.read_text(), 1000)[: args.chunks]
    doc = LoadedDocument(title=SAMPLE.name, text=SEPARATOR.join(chunks), pages=1)
    with tempfile.TemporaryDirectory() as tmp:
        settings = RunSettings(local="embedded", max_rounds=2, max_chunk_chars=12_000, sandbox="bwrap", job_cache=False)
        result = run_minions([doc], "Where is the largest facility, and who runs the company?",
                             RunContext(settings=settings, models=Provider()), checkpoint=Path(tmp))
        print(f"{result.status}: {result.answer} ({result.rounds} rounds, {result.elapsed_s:.0f} s)")
        with open_persistence(Path(tmp)) as (saver, store):
            page = render_report(show_thread(saver, store, result.thread_id), thread_graph(saver, store, result.thread_id))
        html = Path(tmp) / "run.html"
        html.write_text(page, encoding="utf-8")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
                        f"--screenshot={args.out}", "--window-size=1200,2400", html.as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
