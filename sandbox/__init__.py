"""Sandbox backends that run the supervisor's code, and the chunking helpers."""

from .base import (
    ExecutionRequest,
    ExecutionResult,
    JobSpec,
    SandboxBackend,
    SandboxLimits,
    SandboxStatus,
    SandboxUnavailable,
)
from .bwrap import BwrapBackend
from .docker_backend import DockerBackend
from .select import get_backend

__all__ = [
    "BwrapBackend",
    "DockerBackend",
    "ExecutionRequest",
    "ExecutionResult",
    "JobSpec",
    "SandboxBackend",
    "SandboxLimits",
    "SandboxStatus",
    "SandboxUnavailable",
    "get_backend",
]
