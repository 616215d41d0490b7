"""``minionflow compare``: one task, several protocols, side by side."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from minionflow.contracts.errors import BadInput
from minionflow.graphs.protocols import BUILT_IN
from minionflow.graphs.run import run_minions
from minionflow.storage.persistence import data_dir
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from .common import (
    OUTPUT,
    CheckpointOption,
    DataDir,
    QuietOption,
    VerboseOption,
    _fail,
    _setup_logging,
    app,
    err,
    load_documents,
    location,
    ready,
)
from .options import BATCH, RunOptions, run_options
from .progress import RunProgress
from .render import print_rows


class CompareRow(BaseModel):
    protocol: str
    status: str
    answer: str | None
    error: str | None
    remote_tokens: int
    local_tokens: int
    cost_usd: float
    elapsed_s: float
    thread_id: str | None


@app.command()
@run_options(*BATCH)
def compare(
    documents: Annotated[list[Path], typer.Argument(help="documents to read (.txt, .md, .pdf)", show_default=False, metavar="DOC")],
    question: Annotated[str, typer.Option("--question", "-q", help="the question to answer", metavar="TEXT")],
    options: RunOptions,
    protocols: Annotated[str, typer.Option(help=f"comma-separated (default {','.join(p.name for p in BUILT_IN)})",
                                           metavar="LIST")] = ",".join(p.name for p in BUILT_IN),
    json_out: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="print the rows as JSON", metavar="")] = False,
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run one question with several protocols, side by side.

    Prints each protocol's answer, tokens, cost and time; each run is a thread of its own.
    Takes run's options but --protocol and --graph (it runs --protocols), --thread and
    --approve (no run stops for a review)."""
    home = home or data_dir()
    _setup_logging(verbose, home)
    where = location(home, checkpoint)
    chosen = [p.strip() for p in protocols.split(",") if p.strip()]
    if not chosen:
        raise _fail("--protocols is empty")
    if not question.strip():
        raise _fail("the question (-q) is empty")
    all_settings = [options.settings(p) for p in chosen]
    docs = load_documents(documents)
    results: list[CompareRow] = []
    for settings in all_settings:
        context = ready(settings)
        err.print(f"[bold]{settings.protocol}[/]", highlight=False)
        with RunProgress(err, enabled=not quiet) as progress:
            try:
                result = run_minions(docs, question, replace(context, on_event=progress.handle), checkpoint=where)
            except BadInput as exc:  # e.g. the documents do not fit the local model for minion / local-only
                results.append(CompareRow(protocol=settings.protocol, status="refused", answer=None, error=str(exc),
                                       remote_tokens=0, local_tokens=0, cost_usd=0.0, elapsed_s=0.0, thread_id=None))
                continue
        usage = result.usage
        results.append(CompareRow(
            protocol=settings.protocol, status=result.status, answer=result.answer, error=result.error,
            remote_tokens=(usage.remote.prompt_tokens + usage.remote.completion_tokens) if usage else 0,
            local_tokens=(usage.local.prompt_tokens + usage.local.completion_tokens) if usage else 0,
            cost_usd=usage.total_cost_usd if usage else 0.0, elapsed_s=result.elapsed_s, thread_id=result.thread_id,
        ))
    if json_out:
        sys.stdout.write("[" + ",".join(r.model_dump_json() for r in results) + "]\n")
    else:
        console = Console()
        columns = ["protocol", "status", "remote tokens", "local tokens", "cost (USD)", "time (s)", "thread"]
        cells = [[r.protocol, r.status, f"{r.remote_tokens:,}", f"{r.local_tokens:,}", f"{r.cost_usd:.4f}", f"{r.elapsed_s:.1f}",
                 r.thread_id or "-"] for r in results]
        if not console.is_terminal:  # one row per protocol, the answer (or the error) last and whole
            print_rows(console, "", [*columns, "answer"],
                       [[*row, (r.answer or "") if r.status == "answered" else f"{r.error}"] for row, r in zip(cells, results, strict=True)])
        else:
            print_rows(console, f"Compare: {question}", columns, cells,
                       right=frozenset({"remote tokens", "local tokens", "cost (USD)", "time (s)"}), ids=frozenset({"thread"}))
            for r in results:
                said = escape(r.answer or "") if r.status == "answered" else f"[red]{escape(f'{r.status}: {r.error}')}[/]"
                console.print(f"[bold]{r.protocol}:[/] {said}", highlight=False)
    raise typer.Exit(0 if all(r.status == "answered" for r in results) else 1)
