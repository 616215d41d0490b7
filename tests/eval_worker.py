"""Helper process for the eval tests: runs an eval of a small suite with fake models
(replies derived from the prompt) and the real bwrap sandbox. Every model call logs
a line to a file, so a test can kill the process mid-eval and count what ran again.

    eval_worker.py SUITE OUT CALLS_LOG [--protocols minions,remote-only,local-only] [--hang ITEM_WORD]
        [--judge]

ITEM_WORD makes the first local call whose task holds that word hang (the test kills
the process there). Prints the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeProvider, PromptFake  # noqa: E402
from minionflow.contracts.errors import BadInput
from minionflow.contracts.settings import ModelSpec, RunSettings  # noqa: E402
from minionflow.evaluation.runner import EvalPlan, run_eval  # noqa: E402
from minionflow.evaluation.suite import load_suite  # noqa: E402
from minionflow.graphs import RunContext
from minionflow.sandbox import BwrapBackend  # noqa: E402

# the supervisor's code: one job per paragraph, the user's question as the task
CODE = r'''```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    return [JobManifest(chunk=c, task=TASK, chunk_id=i) for d in context for i, c in enumerate(d.split("\n\n"))]
```'''
FACT = re.compile(r"The (\w+) of the harbour is (\w+)\.")


def question_of(prompt: str) -> str:
    m = re.search(r"(?:Task|Question): (.+)", prompt)
    return m.group(1).strip() if m else ""


def make_local(log: Path, hang: str | None) -> PromptFake:
    hung: list[bool] = []

    def local(prompt: str) -> str:
        with log.open("a") as f:
            f.write(f"local {question_of(prompt)}\n")
        if hang and hang in question_of(prompt) and not hung:
            hung.append(True)
            time.sleep(600)  # killed here
        wanted = re.search(r"What is the (\w+) of the harbour", prompt)
        text = prompt.split('"""')[1] if '"""' in prompt else prompt
        for m in FACT.finditer(text):
            if wanted and m.group(1) == wanted.group(1):
                return f"QUOTE: {m.group(0)}\nANSWER: the {m.group(1)} is {m.group(2)}"
        return "NONE"

    return PromptFake(responder=local)


def make_remote(log: Path) -> PromptFake:
    def remote(prompt: str) -> str:
        with log.open("a") as f:
            f.write(f"remote {'decompose' if 'Write prepare_jobs now' in prompt else 'other'}\n")
        if "Write prepare_jobs now" in prompt:
            return CODE.replace("TASK", repr(question_of(prompt)))
        if "Minion answers:" in prompt:
            answers = re.findall(r"answer: (.+)", prompt)
            answer = answers[0] if answers else "The documents do not say."
            return json.dumps({"decision": "provide_final_answer", "answer": answer, "explanation": "from the minions",
                               "feedback": None, "scratchpad": None})
        if "Candidate answer:" in prompt:  # the judge
            return json.dumps({"correct": "granite" in prompt.split("Candidate answer:")[1], "reason": "compared"})
        # remote-only reads everything: answer from the document like the minions would
        wanted = re.search(r"What is the (\w+) of the harbour", prompt)
        for m in FACT.finditer(prompt):
            if wanted and m.group(1) == wanted.group(1):
                return f"The {m.group(1)} is {m.group(2)}."
        return "The documents do not say."

    return PromptFake(responder=remote)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("suite")
    parser.add_argument("out", type=Path)
    parser.add_argument("calls", type=Path)
    parser.add_argument("--protocols", default="minions,remote-only,local-only")
    parser.add_argument("--hang")
    parser.add_argument("--judge", action="store_true")
    parser.add_argument("--max-rounds", type=int, default=1)
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    provider = FakeProvider(make_remote(args.calls), make_local(args.calls, args.hang))
    plan = EvalPlan(
        suite=load_suite(args.suite), protocols=protocols, out_dir=args.out,
        # the fakes answer as a served model with 4 requests in flight would (the embedded spec alone takes one)
        settings={p: RunSettings(protocol=p, local="embedded;slots=4", chunk_tokens=40, max_chunk_chars=4000,
                                 max_rounds=args.max_rounds)  # type: ignore[arg-type]
                  for p in protocols},
        judge=ModelSpec.parse("judge@http://127.0.0.1:9/v1") if args.judge else None,
    )
    backend = BwrapBackend()
    try:
        results = run_eval(plan, judge_models=provider, context=RunContext(models=provider, sandbox=backend))
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps([r.model_dump(mode="json") for r in results]))


if __name__ == "__main__":
    main()
