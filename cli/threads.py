"""``minionflow resume``, ``runs``, ``show`` and ``history``."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from minionflow.contracts.errors import BadInput
from minionflow.contracts.settings import RunSettings, first_error
from minionflow.evaluation.funnel import LOST_AT, SHORT, Funnel, expected_item, thread_funnel
from minionflow.graphs.run import fork_minions, resume_minions, resume_settings
from minionflow.graphs.threads import (
    ThreadView,
    list_threads,
    resolve_checkpoint,
    resolve_thread,
    show_thread,
    thread_graph,
    thread_history,
)
from minionflow.storage.persistence import Location, data_dir, describe, exists, open_persistence
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from .common import (
    OUTPUT,
    CheckpointOption,
    DataDir,
    QuietOption,
    ReadVerboseOption,
    ResultJsonOption,
    VerboseOption,
    _fail,
    _setup_logging,
    app,
    drive,
    err,
    location,
    log_to_stderr,
    ready,
    resume_command,
)
from .options import FORKABLE, RunOptions, _settings_error, run_options
from .render import egress_table, endpoint_table, print_code, print_rows, usage_table


@contextmanager
def _opened(home: Path | None, checkpoint: str | None) -> Iterator[tuple[Any, Any]]:
    try:
        with open_persistence(_existing(home, checkpoint)) as pair:
            yield pair
    except BadInput as exc:
        raise _fail(str(exc)) from None


def _existing(home: Path | None, checkpoint: str | None) -> Location:
    """The location of existing threads; a folder without a database is an error
    (and stays empty)."""
    where = location(home or data_dir(), checkpoint)
    if not exists(where):
        raise _fail(f"no checkpoint database in {describe(where)}")
    return where


def _resolved(where: Location, thread: str, at: str | None = None) -> tuple[str, str | None]:
    """The whole thread (and checkpoint) id for what the user typed: an id, or the
    start of exactly one."""
    try:
        with open_persistence(where) as (saver, _):
            thread = resolve_thread(saver, thread)
            return thread, (resolve_checkpoint(saver, thread, at) if at is not None else None)
    except BadInput as exc:
        raise _fail(str(exc)) from None


def _next(names: list[str]) -> str:
    """The nodes a checkpoint waits for, repeats counted: "parallel_minion_map x31"."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in counts.items())


def _age(when: datetime) -> str:
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
def resume(
    thread: Annotated[str, typer.Argument(help="the thread id a run printed, or the start of one", metavar="THREAD")],
    accept: Annotated[bool, typer.Option("--accept", help="accept the supervisor's code that waits for review", metavar="")] = False,
    reject: Annotated[str | None, typer.Option("--reject", help="reject it, with the reason the supervisor will read", metavar="REASON")] = None,
    edit: Annotated[Path | None, typer.Option("--edit", help="run this file's code instead", metavar="FILE")] = None,
    json_out: ResultJsonOption = False,
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Continue an unfinished run.

    The thread keeps the settings it started with (fork changes them). A review of the
    supervisor's code that waits is answered with --accept, --reject or --edit."""
    where = _existing(home, checkpoint)
    _setup_logging(verbose, home or data_dir())
    thread, _ = _resolved(where, thread)
    again = resume_command(thread, home, checkpoint)
    try:
        settings = resume_settings(thread, where, unfinished=True)
    except BadInput as exc:
        raise _fail(str(exc)) from None
    context = ready(settings)
    approval: dict[str, object] | None = None
    if sum(x not in (None, False) for x in (accept, reject, edit)) > 1:
        raise _fail("choose one of --accept, --reject and --edit")
    if accept:
        approval = {"action": "accept"}
    elif reject is not None:
        approval = {"action": "reject", "reason": reject}
    elif edit:
        try:
            approval = {"action": "edit", "code": edit.read_text(encoding="utf-8")}
        except OSError as exc:
            raise _fail(f"{edit}: {exc.strerror}") from None
    drive(lambda context: resume_minions(thread, checkpoint=where, context=context, approval=approval),
          context, where, json_out, again, quiet)


@app.command()
@run_options(*FORKABLE, fork=True)
def fork(
    thread: Annotated[str, typer.Argument(help="the thread to fork (its id or the start of one)", metavar="THREAD")],
    at: Annotated[str, typer.Option("--at", help="checkpoint id, or the start of one (minionflow history THREAD)", metavar="CHECKPOINT")],
    options: RunOptions,
    json_out: ResultJsonOption = False,
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Start a new thread from a checkpoint, with changed settings.

    An option not given keeps the thread's value; the original thread stays as it is. What
    the checkpoints already hold cannot change: the documents and question, the protocol
    or graph (--protocol, --graph), the chunking (--chunk-tokens), the sandbox (--sandbox,
    --sandbox-runtime) and whether code waits for a review (--approve); start a new run to
    change those. The new thread's id is made for it (no --thread) and printed."""
    where = _existing(home, checkpoint)
    _setup_logging(verbose, home or data_dir())
    changes = options.changes()
    thread, resolved_at = _resolved(where, thread, at)
    assert resolved_at is not None
    at = resolved_at
    try:
        settings = RunSettings.model_validate({**resume_settings(thread, where).model_dump(mode="json"), **changes})
    except BadInput as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        raise _fail(_settings_error(exc)) from None
    context = ready(settings)
    new_thread = str(uuid.uuid4())
    again = resume_command(new_thread, home, checkpoint)
    drive(lambda context: fork_minions(thread, at, changes, new_thread_id=new_thread, checkpoint=where, context=context),
          context, where, json_out, again, quiet)


RUNS_COLUMNS = ["thread", "protocol", "status", "rounds", "jobs", "remote tokens", "local tokens", "cost (USD)", "age", "question"]


def _no_runs(json_out: bool) -> None:
    """An empty listing: [] for machines; the header alone in a pipe (so that a reader
    never takes the message for an id), the message on stderr; the message on a terminal."""
    if json_out:
        sys.stdout.write("[]\n")
    elif Console().is_terminal:
        sys.stdout.write("no runs yet\n")
    else:
        sys.stdout.write("\t".join(RUNS_COLUMNS) + "\n")
        err.print("no runs yet", highlight=False)


@app.command()
def runs(home: DataDir = None, checkpoint: CheckpointOption = None,
         json_out: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="the runs as a JSON list", metavar="")] = False,
         verbose: ReadVerboseOption = False) -> None:
    """List the runs (threads), newest first."""
    log_to_stderr(verbose)
    if not exists(location(home or data_dir(), checkpoint)):
        _no_runs(json_out)
        return
    with _opened(home, checkpoint) as (saver, store):
        threads = list_threads(saver, store)
    if json_out:
        sys.stdout.write("[" + ",".join(t.model_dump_json() for t in threads) + "]\n")
        return
    if not threads:
        _no_runs(json_out)
        return
    rows = [[t.thread_id, t.protocol, t.status if t.status == "answered" else f"unfinished (next: {_next(t.next) or '-'})",
             str(t.rounds), str(t.jobs), f"{t.remote_tokens:,}", f"{t.local_tokens:,}", f"{t.cost_usd:.4f}", _age(t.updated),
             t.question] for t in threads]
    print_rows(Console(), "Runs", RUNS_COLUMNS, rows,
               right=frozenset({"rounds", "jobs", "remote tokens", "local tokens", "cost (USD)", "age"}), ids=frozenset({"thread"}))


@app.command()
def show(
    thread: Annotated[str, typer.Argument(help="thread id, or the start of one", metavar="THREAD")],
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    json_out: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="everything, for machines", metavar="")] = False,
    egress: Annotated[bool, typer.Option("--egress", help="only what was sent to the remote model, and how much of it "
                                         "came from the documents", metavar="")] = False,
    expect: Annotated[list[str] | None, typer.Option(
        "--expect", metavar="TEXT", help="the answer you expected: where the run lost it; twice for an answer of "
        "two parts", show_default=False)] = None,
    verbose: ReadVerboseOption = False,
) -> None:
    """Show a run round by round.

    The supervisor's code and its execution, the jobs and their outputs, what the filter
    kept, the supervisor's decision and the usage of each round. With --expect, the loss
    funnel: which stages the expected answer reached (docs/answer-quality.md)."""
    log_to_stderr(verbose)
    try:
        item = expected_item(expect) if expect is not None else None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    with _opened(home, checkpoint) as (saver, store):
        view = show_thread(saver, store, resolve_thread(saver, thread))
        found = None if item is None else (
            thread_funnel(item.model_copy(update={"question": view.summary.question}), view, store))
    if item is not None and found is None:
        raise _fail(f"thread {view.summary.thread_id} has no final answer yet: nothing to compare --expect with")
    if egress:
        remote = [c for c in view.calls if c.role == "remote"]
        if json_out:
            ledger = {"thread_id": view.summary.thread_id, "egress": view.usage.egress.model_dump(),
                      "calls": [c.model_dump(exclude={"transcript"}) for c in remote]}
            sys.stdout.write(json.dumps(ledger, indent=2) + "\n")
        else:
            Console().print(egress_table(view.usage, remote))
        return
    if json_out:
        out = view.model_dump(mode="json")
        if found is not None:
            out["funnel"] = found.model_dump(mode="json")
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    console = Console()
    _render_view(console, view)
    if found is not None:
        _render_funnel(console, found)


def _render_funnel(console: Console, found: Funnel) -> None:
    """The stages the expected answer reached, and where it was lost."""
    reached = "; ".join(f"{SHORT[stage]} {'yes' if held else 'no'}" for stage, held in found.held.items()
                        if held is not None)
    console.print(f"expected answer: {reached}", highlight=False)
    if found.lost_at is None:
        console.print("[green]the answer is right[/]", highlight=False)
    else:
        console.print(f"[red]lost at {SHORT[found.lost_at]}[/]: {LOST_AT[found.lost_at]}", highlight=False)


def _render_view(console: Console, view: ThreadView) -> None:
    s = view.summary
    console.print(f"[bold]thread {s.thread_id}[/] ({s.status}): {escape(s.question)}", highlight=False)
    for doc in view.documents:
        console.print(f"  document {doc['title']}: {doc['chars']:,} characters, {doc['pages']} page(s)", highlight=False)
    for r in view.rounds:
        console.rule(f"round {r.round}")
        ran = f"code ran in the {r.sandbox} sandbox" if r.sandbox else "no code ran in a sandbox"
        console.print(f"plan: {r.plan_source}; {ran}; code attempts that failed: {len(r.code_errors)}", highlight=False)
        for e in r.code_errors:
            console.print(f"[red]  {escape(e.splitlines()[0])}[/]", highlight=False)
        if r.code:
            print_code(console, r.code)
        failed = [x for x in r.results if x["status"] != "ok"]
        ungrounded = r.ungrounded
        split = [x for x in r.results if (x.get("parts") or 1) > 1]
        cached = [x for x in r.results if x["usage"] and all(u.get("cache_hit") for u in x["usage"])]
        extra = f", read in parts to fit the context: {len(split)}" if split else ""
        extra += f", answered from the job cache: {len(cached)}" if cached else ""
        console.print(f"jobs: {len(r.jobs)}, failed: {len(failed)}, ungrounded: {len(ungrounded)}, kept: {len(r.kept)}"
                      f"{extra}", highlight=False)
        for k in r.kept:
            console.print(escape(f"  [{k['job_id']}] {k['answer']}  (\"{k['citation'] or ''}\")"), highlight=False)
        if ungrounded:
            console.print("not forwarded, not grounded in their chunks:", highlight=False)
        for x in ungrounded[:10]:
            console.print("  [dim]" + escape(f"[{x['job_id']}] {x['answer']}  — {x['grounding'].get('reason')}") + "[/]",
                          highlight=False)
        if len(ungrounded) > 10:
            console.print(f"  [dim]... and {len(ungrounded) - 10} more (show --json lists all)[/]", highlight=False)
        for x in failed[:10]:
            console.print("  [red]" + escape(f"[{x['job_id']}] {x['error']}") + "[/]", highlight=False)
        d = r.decision
        console.print(f"decision: [bold]{d.get('decision')}[/] — {escape(str(d.get('answer')))}", highlight=False)
        if d.get("feedback"):
            console.print(f"feedback: {escape(d['feedback'])}", highlight=False)
    if view.conversation:
        console.rule("conversation (the supervisor never saw the document)")
        for turn in view.conversation:
            who = "supervisor" if turn["role"] == "remote" else "local model"
            console.print(f"[bold]{who}[/] (turn {turn['round']}): {escape(turn['content'])}", highlight=False)
    for note in view.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if view.final:
        console.print(f"[bold]Answer:[/] {escape(view.final['answer'] or '(no answer)')}", highlight=False)
        if view.final.get("quote"):
            console.print(f"[bold]The document says:[/] \"{escape(view.final['quote'])}\"", highlight=False)
    console.print(usage_table(view.usage))
    if (endpoints := endpoint_table(view.usage)) is not None:
        console.print(endpoints)


@app.command()
def report(
    thread: Annotated[str, typer.Argument(help="thread id (or the start of one), or an eval folder", metavar="THREAD")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML file to write", metavar="FILE")],
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    verbose: ReadVerboseOption = False,
) -> None:
    """Write an HTML report of a run or an eval.

    One self-contained page that opens offline: for a run its graph, rounds, jobs, usage,
    cost and what left the machine; for a finished eval (its folder) the summary and plot."""
    log_to_stderr(verbose)
    from minionflow.evaluation.report import SUMMARY_JSON, EvalSummary

    from .report import render_eval_report, render_report

    folder = Path(thread)
    if (folder / SUMMARY_JSON).is_file():
        try:
            summary = EvalSummary.model_validate_json((folder / SUMMARY_JSON).read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise _fail(f"{folder / SUMMARY_JSON} is not an eval summary: {first_error(exc)[1]}") from None
        page = render_eval_report(summary, str(folder))
    else:
        with _opened(home, checkpoint) as (saver, store):
            try:
                resolved = resolve_thread(saver, thread)
                page = render_report(show_thread(saver, store, resolved), thread_graph(saver, store, resolved))
            except BadInput as exc:
                raise _fail(str(exc)) from None
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror or exc}") from None
    err.print(f"wrote {out} ({len(page.encode()):,} bytes)", highlight=False)


@app.command()
def history(thread: Annotated[str, typer.Argument(metavar="THREAD", help="thread id, or the start of one")], home: DataDir = None,
            checkpoint: CheckpointOption = None,
            json_out: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="the checkpoints as a JSON list", metavar="")] = False,
            verbose: ReadVerboseOption = False) -> None:
    """List a thread's checkpoints, newest first.

    fork --at takes their ids."""
    log_to_stderr(verbose)
    with _opened(home, checkpoint) as (saver, store):
        thread = resolve_thread(saver, thread)
        checkpoints = thread_history(saver, store, thread)
    if json_out:
        sys.stdout.write("[" + ",".join(c.model_dump_json() for c in checkpoints) + "]\n")
        return
    rows = [[c.checkpoint_id, str(c.step), str(c.round or "-"), c.source, _next(c.next) or "(end)"] for c in checkpoints]
    print_rows(Console(), f"Checkpoints of {thread}", ["checkpoint", "step", "round", "source", "next"], rows,
               right=frozenset({"step", "round"}), ids=frozenset({"checkpoint"}))
