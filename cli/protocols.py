"""``minionflow protocols``: the protocols this installation can run (the four built in, and
any a package registers under the ``minionflow.protocols`` entry point);
``minionflow studio-config``: the ``langgraph.json`` that serves them all to ``langgraph dev``
and LangGraph Studio."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from minionflow.graphs.protocols import all_protocols
from rich.console import Console
from rich.table import Table

from .common import OUTPUT, _fail, app


@app.command("protocols")
def list_protocols(
    json_out: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="the protocols as a JSON list", metavar="")] = False,
) -> None:
    """List the protocols --protocol can take.

    The built-in ones and any that an installed package registers."""
    rows = [{"name": p.name, "calls": sorted(p.calls), "runs_code": p.runs_code, "reads_whole": p.reads_whole,
             "description": p.description} for p in all_protocols().values()]
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(box=None, show_edge=False)
    for column in ("protocol", "calls", "runs code", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["name"]), ", ".join(row["calls"]), "yes" if row["runs_code"] else "no",  # type: ignore[arg-type]
                      str(row["description"]))
    Console().print(table)


@app.command("studio-config")
def write_studio_config(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write it to this file (default stdout)",
                                             metavar="FILE")] = None,
) -> None:
    """Print a langgraph.json that serves every protocol.

    For LangGraph Studio: `langgraph dev --config FILE`."""
    from minionflow.graphs.studio import studio_config  # compiles the served graphs: only here

    text = json.dumps(studio_config(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{out}: {exc.strerror}") from None
