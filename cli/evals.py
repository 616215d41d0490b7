"""``minionflow eval``: run a suite of questions with several protocols and show what
each buys (accuracy, tokens, cost, latency); ``minionflow convert``: turn a
downloaded dataset (FinanceBench, QASPER, LongHealth) into a suite."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from minionflow.contracts.errors import BadInput
from minionflow.evaluation.report import funnel_rows, summarize, table_rows, write_reports
from minionflow.evaluation.runner import EvalPlan, ItemResult, run_eval
from minionflow.evaluation.suite import SuiteItem, load_suite
from minionflow.graphs.protocols import all_protocols
from minionflow.graphs.run import RunContext
from minionflow.storage.persistence import data_dir, describe, resolve_location
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import (
    EXIT_ANSWERED,
    EXIT_FAILED,
    OUTPUT,
    CheckpointOption,
    DataDir,
    QuietOption,
    VerboseOption,
    _fail,
    _parse_spec,
    _setup_logging,
    app,
    err,
    ready,
)
from .options import BATCH, RunOptions, run_options
from .signals import EXIT_PAUSED, pause_on_signals

DEFAULT_PROTOCOLS = "minions,remote-only"


class EvalProgress:
    """One bar over the suite's items, and what the current run is doing; off a
    terminal, a plain line on stderr as each question x protocol ends."""

    def __init__(self, console: Console, items: int, protocols: list[str], enabled: bool) -> None:
        self.protocols = protocols
        self.console = console
        self.items = items
        self.plain = enabled and not console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
                                 disable=not enabled or self.plain)
        self.task = self.progress.add_task("items", total=items, detail="")
        self.finished: dict[str, int] = {}
        self.jobs = (0, 0)

    def __enter__(self) -> EvalProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, item: SuiteItem, protocol: str, previous: ItemResult | None) -> None:
        again = " (resumed)" if previous is not None else ""
        self.jobs = (0, 0)
        self.progress.update(self.task, description=f"{item.id} · {protocol}{again}", detail="")

    def done(self, item: SuiteItem, protocol: str, result: ItemResult | None) -> None:
        if result is not None and result.status == "paused":
            return
        self.finished[item.id] = self.finished.get(item.id, 0) + 1
        if self.finished[item.id] == len(self.protocols):
            self.progress.advance(self.task)
        if self.plain and result is not None:
            verdict = "" if result.correct is None else (", right" if result.correct else ", wrong")
            self.console.print(f"progress: [{len([i for i, n in self.finished.items() if n == len(self.protocols)])}/"
                               f"{self.items}] {item.id} · {protocol}: {result.status}{verdict} ({result.elapsed_s:.0f}s)",
                               highlight=False, markup=False, soft_wrap=True)

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "jobs":
            self.jobs = (0, int(event["total"]))
        elif kind == "job":
            self.jobs = (self.jobs[0] + 1, self.jobs[1])
        else:
            return
        self.progress.update(self.task, detail=f"jobs {self.jobs[0]}/{self.jobs[1]}")


def _protocols(value: str) -> list[str]:
    chosen = list(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    if not chosen:
        raise _fail("--protocols is empty")
    known = all_protocols()
    unknown = [p for p in chosen if p not in known]
    if unknown:
        raise _fail(f"unknown protocol {unknown[0]!r} in --protocols; choose from {', '.join(known)}")
    return chosen


@app.command("eval")
@run_options(*BATCH)
def eval_command(
    suite_path: Annotated[Path, typer.Argument(metavar="SUITE", help="the suite: a JSONL file (id, documents, question, answers, match, tags)", show_default=False)],
    options: RunOptions,
    protocols: Annotated[str, typer.Option(help=f"comma-separated (default {DEFAULT_PROTOCOLS})",
                                           metavar="LIST")] = DEFAULT_PROTOCOLS,
    judge: Annotated[str | None, typer.Option(help="model spec of an LLM judge; its verdict is recorded apart from the deterministic score", metavar="SPEC")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the eval's folder; run again to resume (default eval-results/SUITE-NAME)", metavar="DIR")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N questions", metavar="N")] = None,
    json_out: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="print the summary as JSON", metavar="")] = False,
    quiet: QuietOption = False,
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Score protocols on a suite of questions.

    Accuracy (95% Wilson interval), tokens, cost, latency and savings against remote-only.
    Every question x protocol is a thread; an interrupted eval resumes where it stopped.
    Takes run's options but --protocol and --graph (it runs --protocols), --thread and
    --approve (no run stops for a review)."""
    home = home or data_dir()
    _setup_logging(verbose, home)
    chosen = _protocols(protocols)
    try:
        suite = load_suite(suite_path)
    except BadInput as exc:
        raise _fail(str(exc)) from None
    all_settings = {p: options.settings(p) for p in chosen}
    judge_spec = _parse_spec(judge, "judge")
    out_dir = out or Path("eval-results") / suite.name
    try:
        plan = EvalPlan(suite=suite, protocols=chosen, settings=all_settings, out_dir=out_dir,
                        checkpoint=resolve_location(checkpoint) if checkpoint else None, judge=judge_spec, limit=limit)
    except ValidationError as exc:
        raise _fail(f"invalid eval: {exc.errors()[0]['msg']}") from None
    contexts = [ready(s) for s in all_settings.values()]
    if judge_spec is not None:
        from minionflow.serving.models import ModelConfigError, preflight

        try:
            preflight(judge_spec, "remote")
        except ModelConfigError as exc:
            raise _fail(f"--judge: {exc}") from None
    backend = next((c.sandbox for c in contexts if c.sandbox is not None), None)
    again = "the same minionflow eval command (it runs only what did not finish)"
    with EvalProgress(err, len(plan.items), chosen, enabled=not quiet) as progress, \
            pause_on_signals(err, again, json_out) as control:
        try:
            results = run_eval(plan, context=RunContext(sandbox=backend, on_event=progress.event, control=control),
                               on_start=progress.start, on_done=progress.done)
        except BadInput as exc:
            raise _fail(str(exc)) from None
    summary = summarize(suite.name, len(plan.items), not any(i.scored for i in plan.items), chosen, results)
    paths = write_reports(summary, out_dir)
    paused = control.drain_requested or len(results) < len(plan.items) * len(chosen)
    failed = any(r.status == "failed" for r in results)
    if json_out:
        sys.stdout.write(summary.model_dump_json(indent=2) + "\n")
    else:
        _print(summary, paths, plan)
        if paused:
            err.print(f"[yellow]paused[/]: {len(results)} of {len(plan.items) * len(chosen)} runs finished; "
                      "run the same command again to resume", highlight=False)
        elif failed:
            err.print("[red]some runs failed[/] (see results.jsonl); run the same command again to resume them", highlight=False)
    raise typer.Exit(EXIT_PAUSED if paused else EXIT_FAILED if failed else EXIT_ANSWERED)


def _by_protocol(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    """A table of rows per protocol turned round: one column per protocol, one row per
    figure, which fits a narrow terminal."""
    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True)
    for row in rows:
        table.add_column(row[0], justify="right")
    for i, header in enumerate(headers[1:], start=1):
        table.add_row(header, *(row[i] for row in rows))
    return table


def _print(summary: Any, paths: dict[str, Path], plan: EvalPlan) -> None:
    console = Console()
    console.print(_by_protocol(f"Eval: {summary.suite}, {summary.items} questions", *table_rows(summary)))
    f_headers, f_rows = funnel_rows(summary)
    if f_rows:
        console.print(_by_protocol("Where the answerable questions were lost (docs/answer-quality.md)", f_headers, f_rows))
    for p in summary.protocols:
        if p.failed or p.refused or p.fallback_answers:
            console.print(f"{p.protocol}: {p.failed} failed, {p.refused} refused, {p.fallback_answers} answers from a "
                          "fallback", highlight=False)
    plots = ", ".join(paths[k].name for k in ("plot", "funnel") if k in paths)
    console.print(f"results: {paths['summary'].parent}/ (results.jsonl, {paths['summary'].name}, {paths['table'].name}, "
                  f"{plots})", highlight=False)
    console.print(f"threads: minionflow show THREAD --checkpoint {describe(plan.location)}", highlight=False)


@app.command("convert")
def convert_command(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="financebench, qasper or longhealth", show_default=False)],
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="the dataset file as downloaded: financebench_open_source.jsonl, qasper-*-v0.3.json or benchmark_v5.json", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for suite.jsonl and the documents it needs", metavar="DIR")],
    pdfs: Annotated[Path | None, typer.Option(help="FinanceBench's PDFs folder (default pdfs/ next to SOURCE or one level up)", metavar="DIR")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N questions (by id)", metavar="N")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing suite.jsonl", metavar="")] = False,
) -> None:
    """Convert a downloaded dataset into a suite for eval.

    FinanceBench, QASPER and LongHealth, from the files as their authors publish them;
    nothing is downloaded."""
    from minionflow.evaluation.loaders import KINDS, convert

    if dataset not in KINDS:
        raise _fail(f"unknown dataset {dataset!r}; choose one of {', '.join(KINDS)}")
    try:
        report = convert(dataset, source, out, pdfs=pdfs, limit=limit, overwrite=overwrite)  # type: ignore[arg-type]
    except BadInput as exc:
        raise _fail(str(exc)) from None
    Console().print(report.summary(), highlight=False, soft_wrap=True)
    Console().print(f"run it with: minionflow eval {report.suite}", highlight=False, soft_wrap=True)
