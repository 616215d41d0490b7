"""Progress drawn from the graph's custom stream events: Rich bars on a terminal,
plain lines on stderr otherwise (a pipe, a log file, CI): one at each step, and one
every few seconds while the minions work."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class RunProgress:
    PLAIN_EVERY_S = 5.0

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = console
        self.plain = enabled and not console.is_terminal
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console, transient=False,
            disable=not enabled or self.plain,
        )
        self.status: TaskID | None = None
        self.jobs: TaskID | None = None
        self.failed = 0
        self.tokens = {"remote": 0, "local": 0}
        self.map_state = (0, 0)
        self.last_line = 0.0

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        self.status = self.progress.add_task("starting", total=None, count="", detail="")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None:  # refused or stopped before an end: leave no bar behind the error line
            for task in list(self.progress.task_ids):
                self.progress.remove_task(task)
        self.progress.__exit__(exc_type, exc, tb)

    def _line(self, text: str) -> None:
        self.console.print(f"progress: {text}", highlight=False, markup=False, soft_wrap=True)
        self.last_line = time.monotonic()

    def _say(self, text: str) -> None:
        if self.plain:
            self._line(text)
        elif self.status is not None:
            self.progress.update(self.status, description=text)

    def _map_line(self, round_: Any, force: bool = False) -> None:
        done, total = self.map_state
        if self.plain and (force or time.monotonic() - self.last_line >= self.PLAIN_EVERY_S):
            failed = f", {self.failed} failed" if self.failed else ""
            self._line(f"round {round_}: minions {done}/{total} done{failed}; "
                       f"tokens remote {self.tokens['remote']:,}, local {self.tokens['local']:,}")

    def _show_tokens(self) -> None:
        if self.status is not None:
            self.progress.update(self.status, detail=f"tokens: remote {self.tokens['remote']:,}, local {self.tokens['local']:,}")

    def handle(self, event: dict[str, Any]) -> None:
        kind, round_ = event.get("type"), event.get("round")
        if kind == "usage":
            self.tokens[event["role"]] += event["tokens"]
            self._show_tokens()
        elif kind == "decompose":
            self._say(f"round {round_}: supervisor writes code (attempt {event['attempt']})")
        elif kind == "execute":
            self._say(f"round {round_}: sandbox {event['status']} ({event['jobs']} jobs, {event['seconds']}s)")
        elif kind == "plan":
            self._say(f"round {round_}: built-in plan, the supervisor is not asked for code ({event['reason']})")
        elif kind == "fallback":
            self._say(f"round {round_}: code failed, built-in plan ({event['jobs']} jobs)")
        elif kind == "jobs":
            self.failed = 0
            self.map_state = (0, int(event["total"]))
            self.jobs = self.progress.add_task(f"round {round_}: minions", total=event["total"],
                                               count=f"0/{event['total']}", detail="")
            self._map_line(round_, force=True)
        elif kind == "job" and self.jobs is not None:
            self.tokens["local"] += event.get("tokens", 0)
            self._show_tokens()
            self.failed += event["status"] != "ok"
            self.map_state = (self.map_state[0] + 1, self.map_state[1])
            self._map_line(round_, force=self.map_state[0] == self.map_state[1])
            self.progress.advance(self.jobs)
            task = self.progress.tasks[self.jobs]
            self.progress.update(self.jobs, count=f"{int(task.completed)}/{int(task.total or 0)}",
                                 detail=f"{self.failed} failed" if self.failed else "")
        elif kind == "filter":
            self._say(f"round {round_}: kept {event['kept']} of {event['jobs']} answers")
        elif kind == "aggregate":
            self._say(f"round {round_}: supervisor decided: {event['decision']}")
