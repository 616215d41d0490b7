"""Helper process for the SIGKILL tests: runs MinionS with fakes and an on-disk
checkpointer (a folder, or a postgresql:// URL). Every model call and sandbox
execution logs START/END lines to a file, so the test knows when to kill and
can count what ran twice.

    durable_worker.py WHERE THREAD CALLS_LOG [--rounds N] [--hang POINT]
        run or resume; print the result as JSON. POINT (decompose:R, aggregate:R,
        execute:R) makes that call hang after logging START: the test kills it there.
    durable_worker.py WHERE THREAD CALLS_LOG --finished
        print the job ids whose results are checkpointed
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
from minionflow.contracts.settings import SandboxLimits
from minionflow.graphs import (
    RunContext,
    RunSettings,  # noqa: E402
)
from minionflow.graphs.minions import build_minions_graph  # noqa: E402
from minionflow.graphs.run import live_state, run_minions  # noqa: E402
from minionflow.sandbox import BwrapBackend  # noqa: E402
from minionflow.sandbox.base import ExecutionRequest, ExecutionResult  # noqa: E402
from minionflow.storage.documents import LoadedDocument  # noqa: E402
from minionflow.storage.persistence import open_persistence  # noqa: E402
from minionflow.storage.store import get_json  # noqa: E402

CODE = r'''```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    return [JobManifest(chunk=c, task="Find the secret number", chunk_id=i) for i, c in enumerate(context[0].split("\n\n"))]
```'''
# round 2: confirm, on the blocks round 1 found something in
CONFIRM_CODE = r'''```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    blocks = context[0].split("\n\n")
    found = [o.chunk_id for o in prev_job_outputs if o.answer]
    return [JobManifest(chunk=blocks[i], task="Confirm the secret number", chunk_id=i) for i in found]
```'''


class Log:
    def __init__(self, path: Path, hang: str | None) -> None:
        self.path, self.hang = path, hang

    def call(self, point: str, body):  # type: ignore[no-untyped-def]
        with self.path.open("a") as f:
            f.write(f"START {point}\n")
        if point == self.hang:
            time.sleep(600)  # killed here
        out = body()
        with self.path.open("a") as f:
            f.write(f"END {point}\n")
        return out


class LoggedSandbox:
    name = "bwrap"

    def __init__(self, log: Log) -> None:
        self.log, self.inner, self.calls = log, BwrapBackend(), 0

    def check(self) -> None:
        self.inner.check()

    def execute(self, request: ExecutionRequest, limits: SandboxLimits) -> ExecutionResult:
        self.calls += 1
        point = "execute:2" if "Confirm" in request.code else "execute:1"
        return self.log.call(point, lambda: self.inner.execute(request, limits))  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("where")
    parser.add_argument("thread")
    parser.add_argument("calls", type=Path)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hang")
    parser.add_argument("--finished", action="store_true")
    args = parser.parse_args()
    log = Log(args.calls, args.hang)

    def local(prompt: str) -> str:
        job = re.search(r"Block (\d+)", prompt).group(1)  # type: ignore[union-attr]
        round_ = "2" if "Confirm" in prompt else "1"

        def answer() -> str:
            time.sleep(0.25)
            found = "42" if "secret number is 42" in prompt else None
            return json.dumps({"explanation": "x", "citation": None, "answer": found})

        return log.call(f"job:{round_}:{job}", answer)  # type: ignore[no-any-return]

    def remote(prompt: str) -> str:
        round_ = int(re.search(r"[Rr]ound (\d+) of at most", prompt).group(1))  # type: ignore[union-attr]
        if "Write prepare_jobs now" in prompt:
            return log.call(f"decompose:{round_}", lambda: CODE if round_ == 1 else CONFIRM_CODE)  # type: ignore[no-any-return]
        decision = "provide_final_answer" if round_ >= args.rounds else "request_additional_info"
        reply = json.dumps({"decision": decision, "answer": "42", "explanation": "e",
                            "feedback": "confirm it" if decision != "provide_final_answer" else None, "scratchpad": None})
        return log.call(f"aggregate:{round_}", lambda: reply)  # type: ignore[no-any-return]

    provider = FakeProvider(PromptFake(responder=remote), PromptFake(responder=local))
    blocks = [f"Block {i} lists crates on the quay." for i in range(30)]
    blocks[17] = "Block 17 says the secret number is 42."
    doc = LoadedDocument(title="quay.txt", text="\n\n".join(blocks), pages=1)
    settings = RunSettings(local="embedded;slots=2", max_rounds=max(2, args.rounds))  # two jobs in flight
    if args.finished:
        # the jobs that finished, as `minionflow show` sees them: those of tasks that ended
        # (LangGraph's pending writes) and those of tasks cut short (the jobs' own records)
        with open_persistence(args.where) as (saver, store):
            graph = build_minions_graph(saver, store)
            _, values = live_state(graph, {"configurable": {"thread_id": args.thread}})
            refs = (values.get("round_state") or {}).get("job_results") or []
            print(json.dumps(sorted(str(get_json(store, ref["ref"])["chunk_id"]) for ref in refs)))
        return
    result = run_minions([doc], "What is the secret number?",
                         RunContext(settings=settings, models=provider, sandbox=LoggedSandbox(log)), thread_id=args.thread,
                         checkpoint=args.where)  # type: ignore[arg-type]
    local_calls = sum(1 for u in result.calls if u["role"] == "local")
    remote_calls = [f"{u['node']}:{u['round']}" for u in result.calls if u["role"] == "remote"]
    print(json.dumps({"answer": result.answer, "status": result.status, "rounds": result.rounds,
                      "local_calls_counted": local_calls, "remote_calls_counted": remote_calls}))
    sys.exit(0 if result.status == "answered" else 1)


if __name__ == "__main__":
    main()
