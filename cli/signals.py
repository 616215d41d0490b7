"""Ctrl-C (SIGINT) or SIGTERM pauses a run at the next step boundary (LangGraph's
drain); a second one stops at once. Either way no finished job is lost: each is
saved as it finishes."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from langgraph.runtime import RunControl
from rich.console import Console

EXIT_PAUSED = 130


@contextmanager
def pause_on_signals(console: Console, resume: str | None = None, json_out: bool = False) -> Iterator[RunControl]:
    """``resume``: what to run to go on, printed when a second signal stops the process
    at once: on stdout, or on stderr (``console``) when stdout is for JSON only."""
    control = RunControl()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if control.drain_requested:
            console.print("[red]stopping now[/] (finished jobs are saved; resume the thread to go on)")
            if resume and json_out:
                console.print(f"resume with: {resume}", highlight=False, markup=False, soft_wrap=True)
            elif resume:
                sys.stdout.write(f"The run stopped; nothing that finished is lost. Resume with: {resume}\n")
                sys.stdout.flush()
            os._exit(EXIT_PAUSED)
        control.request_drain(signal.Signals(signum).name)
        console.print("[yellow]pausing after the current step[/] (press Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield control
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
