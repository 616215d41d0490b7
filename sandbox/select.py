"""Choosing a sandbox backend by name; ``auto`` takes the strongest available one."""

from __future__ import annotations

from typing import Literal

from .base import SandboxBackend, SandboxUnavailable
from .bwrap import BwrapBackend

BackendName = Literal["auto", "bwrap"]

# Strongest first. The Docker backend joins this list when it lands.
_PREFERENCE: tuple[str, ...] = ("bwrap",)


def make_backend(name: str) -> SandboxBackend:
    if name == "bwrap":
        return BwrapBackend()
    raise SandboxUnavailable(f"unknown sandbox backend {name!r}; choose one of: auto, {', '.join(_PREFERENCE)}")


def get_backend(name: str = "auto") -> SandboxBackend:
    """Return a ready backend, or raise SandboxUnavailable saying why none can run.

    There is no unsafe fallback: model-written code never runs outside a backend."""
    if name != "auto":
        backend = make_backend(name)
        backend.check()
        return backend
    reasons = []
    for candidate in _PREFERENCE:
        backend = make_backend(candidate)
        try:
            backend.check()
        except SandboxUnavailable as exc:
            reasons.append(f"{candidate}: {exc}")
            continue
        return backend
    raise SandboxUnavailable("no sandbox backend is available; " + "; ".join(reasons))
