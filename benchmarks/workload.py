"""The workload the benchmarks share: zero-latency fake models (the supervisor's
code makes one job per paragraph; every worker abstains), a document of N
paragraphs, and the real bwrap sandbox with its execution time recorded, so
that framework time can be told apart from sandbox time."""

from __future__ import annotations

import json
from typing import Any

CODE = (
    "```python\ndef prepare_jobs(context, prev_job_manifests, prev_job_outputs):\n"
    "    return [JobManifest(chunk=c, task='Find the code word', chunk_id=i) "
    "for i, c in enumerate(context[0].split('\\n\\n'))]\n```"
)
QUESTION = "What is the code word?"


def remote(prompt: str) -> str:
    if "Write prepare_jobs now" in prompt:
        return CODE
    return json.dumps({"decision": "provide_final_answer", "answer": "x", "explanation": "e",
                       "feedback": None, "scratchpad": None})


def local(prompt: str) -> str:
    return json.dumps({"explanation": "none here", "citation": None, "answer": None})


def document(jobs: int, extra: list[str] | None = None, salt: str = "") -> Any:
    """One paragraph (one job) each, about 670 characters, then ``extra`` paragraphs.
    A ``salt`` in every paragraph makes the jobs new to a job cache that outlives the
    measurement (a PostgreSQL store): else a second run answers them all from the cache."""
    from minionflow.storage.documents import LoadedDocument

    paragraphs = [f"Paragraph {i}{salt}: " + "cargo manifest entry. " * 30 for i in range(jobs)] + (extra or [])
    return LoadedDocument(title="bench.txt", text="\n\n".join(paragraphs), pages=1)


def timed_bwrap() -> tuple[Any, list[float]]:
    """A checked bwrap backend, and the list its executions add their durations to."""
    from minionflow.sandbox import BwrapBackend

    backend = BwrapBackend()
    backend.check()
    spent: list[float] = []
    original = backend.execute

    def execute(request, limits):  # type: ignore[no-untyped-def]
        result = original(request, limits)
        spent.append(result.duration_s)
        return result

    backend.execute = execute  # type: ignore[method-assign]
    return backend, spent
