"""The program that runs inside a sandbox: stdlib only.

It is never imported or executed by the host. The host sends this file's source
(after the chunking helpers' source) as the interpreter's ``-c`` argument, and
one JSON request on stdin:

    {"code": str, "context": [str, ...], "prev_job_manifests": [...],
     "prev_job_outputs": [...], "max_jobs": int, "limits": {...}}

It applies the resource limits to itself, executes the supervisor's code, calls
``prepare_jobs(context, prev_job_manifests, prev_job_outputs)`` and writes one
JSON object to the original stdout:

    {"status": "ok", "jobs": [{"chunk", "task", "advice", "chunk_id", "task_id"}]}
    {"status": "error" | "memory", "error": str, "traceback": str}

Anything the supervisor's code prints goes to stderr, which the host keeps as a
(capped) log.
"""

import dataclasses
import json
import linecache
import os
import resource
import sys
import traceback
from typing import Any, Optional

SUPERVISOR_FILENAME = "<supervisor>"


@dataclasses.dataclass
class JobManifest:
    """One job for a local model: a chunk of a document and a task on it."""

    chunk: str
    task: str
    advice: str = ""
    chunk_id: int | None = None
    task_id: int | None = None


@dataclasses.dataclass
class JobOutput:
    """What a local model returned for a job in an earlier round."""

    explanation: str = ""
    citation: str | None = None
    answer: str | None = None
    task: str = ""
    chunk_id: int | None = None
    task_id: int | None = None


def _apply_limits(limits: dict) -> None:
    pairs = {
        "cpu_seconds": resource.RLIMIT_CPU,
        "memory_bytes": resource.RLIMIT_AS,
        "processes": resource.RLIMIT_NPROC,
        "file_size_bytes": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE,
    }
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, which in pairs.items():
        value = limits.get(key)
        if value is not None:
            resource.setrlimit(which, (int(value), int(value)))


def _as_manifest(item: Any, index: int) -> dict:
    if isinstance(item, JobManifest):
        data = dataclasses.asdict(item)
    elif isinstance(item, dict):
        data = dict(item)
    else:
        raise TypeError(
            "prepare_jobs must return a list of JobManifest; item %d is %s"
            % (index, type(item).__name__)
        )
    chunk, task = data.get("chunk"), data.get("task")
    if not isinstance(chunk, str) or not isinstance(task, str):
        raise TypeError("job %d: chunk and task must be strings" % index)
    return {
        "chunk": chunk,
        "task": task,
        "advice": str(data.get("advice") or ""),
        "chunk_id": data.get("chunk_id"),
        "task_id": data.get("task_id"),
    }


def _supervisor_traceback(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if f.filename == SUPERVISOR_FILENAME]
    lines = ["Traceback (most recent call last):\n"]
    lines.extend(traceback.format_list(mine))
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)


def main() -> None:
    result_fd = os.dup(1)
    os.dup2(2, 1)  # the supervisor's prints go to stderr, never into the result
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    code = request["code"]
    max_jobs = int(request.get("max_jobs", 1000))
    _apply_limits(request.get("limits") or {})

    def emit(payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(result_fd, view)
            view = view[written:]
        os.close(result_fd)

    try:
        linecache.cache[SUPERVISOR_FILENAME] = (
            len(code), None, code.splitlines(True), SUPERVISOR_FILENAME
        )
        namespace = {name: value for name, value in globals().items() if name.startswith("chunk_")}
        namespace.update(
            {
                "__name__": "supervisor",
                "JobManifest": JobManifest,
                "JobOutput": JobOutput,
                "List": list,
                "Optional": Optional,
                "estimate_tokens": globals().get("estimate_tokens"),
            }
        )
        exec(compile(code, SUPERVISOR_FILENAME, "exec"), namespace)
        prepare_jobs = namespace.get("prepare_jobs")
        if not callable(prepare_jobs):
            raise NameError("the code must define a function prepare_jobs(context, prev_job_manifests, prev_job_outputs)")
        prev_manifests = [JobManifest(**m) for m in request.get("prev_job_manifests") or []]
        prev_outputs = [JobOutput(**o) for o in request.get("prev_job_outputs") or []]
        produced = prepare_jobs(list(request.get("context") or []), prev_manifests, prev_outputs)
        if produced is None or isinstance(produced, (str, bytes, dict)):
            raise TypeError("prepare_jobs must return a list of JobManifest, got %s" % type(produced).__name__)
        jobs: list[dict] = []
        for index, item in enumerate(produced):
            if len(jobs) >= max_jobs:
                raise ValueError("prepare_jobs returned more than %d jobs (the cap)" % max_jobs)
            jobs.append(_as_manifest(item, index))
        emit({"status": "ok", "jobs": jobs})
    except MemoryError as exc:
        emit({"status": "memory", "error": "MemoryError: the code exceeded the memory limit", "traceback": _supervisor_traceback(exc)})
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the supervisor
        emit(
            {
                "status": "error",
                "error": "%s: %s" % (type(exc).__name__, exc),
                "traceback": _supervisor_traceback(exc),
            }
        )


if __name__ == "__main__":
    main()
