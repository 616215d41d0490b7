"""The sandbox interface: requests, limits, typed results and the backend protocol."""

from __future__ import annotations

import json
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Protocol, runtime_checkable

from minionflow.contracts.settings import SandboxLimits
from pydantic import BaseModel, Field, ValidationError


class SandboxUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


class SandboxStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    OUTPUT_TRUNCATED = "output_truncated"
    INVALID_OUTPUT = "invalid_output"


class JobSpec(BaseModel):
    """One job as ``prepare_jobs`` produced it, validated on the host."""

    chunk: str
    task: str = Field(min_length=1)
    advice: str = ""
    chunk_id: int | None = None
    task_id: int | None = None


class ExecutionRequest(BaseModel):
    """What a backend runs: the supervisor's code (it defines ``prepare_jobs``), the
    documents' texts, the last round's jobs and outputs, and the cap on jobs."""

    code: str
    context: list[str]
    prev_job_manifests: list[dict[str, Any]] = Field(default_factory=list)
    prev_job_outputs: list[dict[str, Any]] = Field(default_factory=list)
    max_jobs: int = Field(1000, gt=0)

    def runner_input(self, limits: SandboxLimits) -> bytes:
        """The runner's stdin (``runner_source()``): this request and the limits, as JSON."""
        payload = self.model_dump()
        payload["limits"] = limits.runner_limits()
        return json.dumps(payload).encode("utf-8")


class ExecutionResult(BaseModel):
    """What a backend returns: the status, the jobs the code made, or the error, its
    traceback and log, and the backend's name (``parse_runner_output`` makes one from the
    runner's reply)."""

    status: SandboxStatus
    jobs: list[JobSpec] = Field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    log: str = ""
    duration_s: float = 0.0
    backend: str = ""

    @property
    def ok(self) -> bool:
        return self.status is SandboxStatus.OK

    def describe(self) -> str:
        """A message the supervisor can act on."""
        if self.ok:
            return f"ok: {len(self.jobs)} jobs"
        parts = [f"{self.status.value}: {self.error or 'no detail'}"]
        if self.traceback:
            parts.append(self.traceback.strip())
        return "\n".join(parts)


@runtime_checkable
class SandboxBackend(Protocol):
    """Where the supervisor's code runs, outside the minionflow process (guarantee 2): a
    ``name``, ``check()`` (SandboxUnavailable, with the reason, when it cannot run here) and
    ``execute(request, limits)``. ``sandbox.select.get_backend`` chooses a built-in one from
    the settings; a ``RunContext(sandbox=...)`` gives any."""

    name: str

    def check(self) -> None:
        """Raise SandboxUnavailable with a clear message when this backend cannot run."""

    def execute(self, request: ExecutionRequest, limits: SandboxLimits) -> ExecutionResult: ...


@cache
def runner_source() -> str:
    """The program run inside the sandbox: the chunking helpers, then the runner."""
    package = resources.files("minionflow.sandbox")
    chunking = package.joinpath("chunking.py").read_text(encoding="utf-8")
    runner = package.joinpath("runner.py").read_text(encoding="utf-8")
    return chunking + "\n\n" + runner


def limit_message(status: SandboxStatus, limits: SandboxLimits) -> str:
    """What to tell the supervisor when a backend stopped its code at a limit."""
    if status is SandboxStatus.TIMEOUT:
        return f"the code ran longer than the {limits.timeout_s:g}s limit and was killed"
    if status is SandboxStatus.OUTPUT_TRUNCATED:
        return f"the result exceeded the {limits.max_output_bytes} byte output cap"
    raise ValueError(f"{status} is not a limit")


def parse_runner_output(stdout: bytes, log: str, duration_s: float, backend: str, max_jobs: int) -> ExecutionResult:
    """Turn the runner's JSON reply into a validated result; anything else is INVALID_OUTPUT."""
    common: dict[str, Any] = {"log": log, "duration_s": duration_s, "backend": backend}
    try:
        payload = json.loads(stdout.decode("utf-8"))
        if not isinstance(payload, dict):
            raise ValueError("the reply is not a JSON object")
        status = SandboxStatus(str(payload.get("status")))
        jobs = [JobSpec.model_validate(j) for j in payload.get("jobs") or []]
    except (ValueError, UnicodeDecodeError, ValidationError) as exc:
        snippet = stdout[:200].decode("utf-8", "replace")
        error = f"the sandbox returned output that is not a valid result ({exc.__class__.__name__}): {snippet!r}"
        return ExecutionResult(status=SandboxStatus.INVALID_OUTPUT, error=error, **common)
    if len(jobs) > max_jobs:
        error = f"the sandbox returned {len(jobs)} jobs, more than the cap of {max_jobs}"
        return ExecutionResult(status=SandboxStatus.INVALID_OUTPUT, error=error, **common)
    return ExecutionResult(status=status, jobs=jobs, error=payload.get("error"), traceback=payload.get("traceback"), **common)
