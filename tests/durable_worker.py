"""Helper process for the SIGKILL test: runs MinionS with fakes and an on-disk
SQLite checkpointer; every local call logs START/END lines to a file.

    durable_worker.py DATA_DIR THREAD CALLS_LOG            run or resume; print the result as JSON
    durable_worker.py DATA_DIR THREAD CALLS_LOG --finished  print the job ids whose results are checkpointed
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeProvider, PromptFake  # noqa: E402
from minionflow.graphs import RunSettings  # noqa: E402
from minionflow.graphs.persistence import sqlite_persistence  # noqa: E402
from minionflow.graphs.run import run_minions  # noqa: E402
from minionflow.nodes.documents import LoadedDocument  # noqa: E402
from minionflow.nodes.store import get_json  # noqa: E402
from minionflow.sandbox import BwrapBackend  # noqa: E402

CODE = r'''```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    return [JobManifest(chunk=c, task="Find the secret number", chunk_id=i) for i, c in enumerate(context[0].split("\n\n"))]
```'''


def main() -> None:
    data, thread, calls = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def local(prompt: str) -> str:
        job = re.search(r"Block (\d+)", prompt).group(1)  # type: ignore[union-attr]
        with calls.open("a") as f:
            f.write(f"START {job}\n")
        import time
        time.sleep(0.25)
        answer = "42" if "secret number is 42" in prompt else None
        with calls.open("a") as f:
            f.write(f"END {job}\n")
        return json.dumps({"explanation": "x", "citation": None, "answer": answer})

    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return CODE
        return json.dumps({"decision": "provide_final_answer", "answer": "42", "explanation": "e",
                           "feedback": None, "scratchpad": None})

    provider = FakeProvider(PromptFake(responder=remote), PromptFake(responder=local))
    blocks = [f"Block {i} lists crates on the quay." for i in range(30)]
    blocks[17] = "Block 17 says the secret number is 42."
    doc = LoadedDocument(title="quay.txt", text="\n\n".join(blocks), pages=1)
    settings = RunSettings(local_concurrency=2)
    if "--finished" in sys.argv:
        # the jobs whose writes LangGraph saved as pending writes of the interrupted step
        with sqlite_persistence(data) as (saver, store):
            saved = saver.get_tuple({"configurable": {"thread_id": thread}})
            done = [
                str(get_json(store, ref["ref"])["chunk_id"])
                for _task, channel, value in (saved.pending_writes if saved else [])
                if channel == "job_results"
                for ref in value
            ]
            print(json.dumps(done))
        return
    result = run_minions([doc], "What is the secret number?", settings, thread_id=thread, checkpoint=data,
                         models=provider, sandbox=BwrapBackend())
    local_calls = sum(1 for u in result.calls if u["role"] == "local")
    print(json.dumps({"answer": result.answer, "status": result.status, "local_calls_counted": local_calls}))
    sys.exit(0 if result.status == "answered" else 1)


if __name__ == "__main__":
    main()
