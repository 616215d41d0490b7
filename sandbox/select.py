"""Choosing a sandbox backend by name; ``auto`` takes the strongest available one."""

from __future__ import annotations

from typing import Literal

from .base import SandboxBackend, SandboxUnavailable
from .bwrap import BwrapBackend

BackendName = Literal["auto", "docker", "bwrap"]

# Strongest first: a container (its own kernel namespaces, cgroup limits, seccomp
# profile) before a bubblewrap jail.
PREFERENCE: tuple[str, ...] = ("docker", "bwrap")


def make_backend(name: str, runtime: str | None = None) -> SandboxBackend:
    if name == "bwrap":
        return BwrapBackend()
    if name == "docker":
        from .docker_backend import DockerBackend

        return DockerBackend(runtime=runtime)
    raise SandboxUnavailable(f"unknown sandbox backend {name!r}; choose one of: auto, {', '.join(PREFERENCE)}")


def get_backend(name: str = "auto", runtime: str | None = None) -> SandboxBackend:
    """Return a ready backend, or raise SandboxUnavailable saying why none can run.

    There is no unsafe fallback: model-written code never runs outside a backend."""
    if name != "auto":
        backend = make_backend(name, runtime)
        backend.check()
        return backend
    reasons = []
    for candidate in PREFERENCE:
        backend = make_backend(candidate, runtime)
        try:
            backend.check()
        except SandboxUnavailable as exc:
            reasons.append(f"{candidate}: {exc}")
            continue
        return backend
    raise SandboxUnavailable("no sandbox backend is available; " + "; ".join(reasons))
