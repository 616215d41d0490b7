"""docs/cli.md, made from the app itself: every command's usage, description and options
by panel. ``python -m minionflow.cli.reference > docs/cli.md`` writes it;
tests/test_cli_help.py fails when the file is not what the app would write."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import typer.main

from .main import app

HEADER = """# Command-line reference

Made from the app by `python -m minionflow.cli.reference > docs/cli.md` (a test checks it is
current). Model specs (`--remote`, `--local`) are described in [models.md](models.md). Every
command takes `-h` / `--help`. Exit codes: 0 answered, 1 failed, 2 bad input
(one `error:` line on stderr), 3 waiting for a review of the supervisor's code, 130 paused
(Ctrl-C; `minionflow resume THREAD` continues).
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _row(param: Any, ctx: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{param._usage_display_name()}`"
    else:
        flags = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        metavar = "" if param.is_flag else param.metavar or ""  # type: ignore[attr-defined]
        name = flags + (f" `{metavar}`" if metavar else "")
    notes = []
    if param.required:
        notes.append("required")
    envvar = getattr(param, "envvar", None)
    if envvar and f"env {envvar}" not in (getattr(param, "help", None) or ""):
        notes.append(f"env `{envvar}`")
    help_text = _cell(getattr(param, "help", None) or "")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    return f"| {_cell(name)} | {help_text}{suffix} |"


def command_section(name: str, command: Any, parent: Any) -> str:
    ctx = command.context_class(command, parent=parent, info_name=name)
    usage = " ".join(["minionflow", name, *command.collect_usage_pieces(ctx)])
    text = inspect.cleandoc(command.help or "")
    out = [f"## `minionflow {name}`", "", text, "", "```", usage, "```", ""]
    panels: dict[str, list[Any]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        default_panel = "Arguments" if param.param_type_name == "argument" else "Options"
        panels.setdefault(getattr(param, "rich_help_panel", None) or default_panel, []).append(param)
    for panel, params in panels.items():
        out += [f"**{panel}**", "", "| | |", "|---|---|", *(_row(p, ctx) for p in params), ""]
    return "\n".join(out)


def markdown() -> str:
    """The reference, as docs/cli.md holds it."""
    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="minionflow")
    sections = [HEADER]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        sections.append(command_section(name, command, root))
    return "\n".join(sections).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
