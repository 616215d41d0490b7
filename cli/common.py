"""What every command shares: the typer app, the options, the one error path (exit 2),
the checks before a run, the review loop and the end of a run."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from minionflow.contracts.errors import BadInput
from minionflow.contracts.settings import ModelSpec, ModelSpecError, RunSettings
from minionflow.graphs.protocols import protocol_for
from minionflow.graphs.run import RunResult
from minionflow.nodes.support.context import RunContext
from minionflow.nodes.support.redaction import RedactionUnavailable
from minionflow.sandbox.base import SandboxUnavailable
from minionflow.sandbox.select import get_backend
from minionflow.serving.models import EndpointUnreachable, ModelConfigError, preflight
from minionflow.storage.documents import LoadedDocument, load_document
from minionflow.storage.persistence import Location, describe, is_postgres, resolve_location
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from minionflow import __version__

from .helpformat import PlainHelpGroup
from .progress import RunProgress
from .render import print_code, render_result
from .signals import EXIT_PAUSED, pause_on_signals

app = typer.Typer(cls=PlainHelpGroup, add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]}, help="Local-remote LLM collaboration (MinionS) over long documents.")
err = Console(stderr=True)

EXIT_ANSWERED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_AWAITING = 0, 1, 2, 3


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"minionflow {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _callback(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, metavar="",
                                          help="print the version and exit")] = False,
) -> None:
    """minionflow: MinionS and friends as checkpointed LangGraph graphs."""


MAX_ERROR_CHARS = 200


def one_line_error(message: str) -> None:
    """``error: MESSAGE`` on one line of stderr, at most about 200 characters."""
    text = " ".join(message.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1].rstrip() + "…"
    err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    one_line_error(message)
    return typer.Exit(EXIT_BAD_INPUT)


def _setup_logging(verbose: bool, home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        log_file = home / "minionflow.log"
        log_file.touch()
    except OSError as exc:
        raise _fail(f"data folder {home}: {exc.strerror or exc} (choose another with --data-dir or $MINIONFLOW_HOME)") from None
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = RichHandler(console=err, show_path=False, show_time=False)
    console.setLevel(logging.INFO if verbose else logging.ERROR)
    root.handlers = [file_handler, console]
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Options every command that has them shares, with their panels (the ones that shape a
# run's settings: cli.options).
OUTPUT, STORAGE = "Output", "Storage"
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", rich_help_panel=STORAGE,
    help="log and SQLite threads (default $MINIONFLOW_HOME or ~/.local/share/minionflow)")]
CheckpointOption = Annotated[str | None, typer.Option(
    "--checkpoint", metavar="DIR|URL", envvar="MINIONFLOW_CHECKPOINT", show_envvar=False, rich_help_panel=STORAGE,
    help="a folder (SQLite) or postgresql:// URL (default the data dir; env MINIONFLOW_CHECKPOINT)")]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", metavar="", rich_help_panel=OUTPUT, help="no progress on stderr")]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", "-v", metavar="", rich_help_panel=OUTPUT, help="log each step on stderr")]
ResultJsonOption = Annotated[bool, typer.Option(
    "--json", metavar="", rich_help_panel=OUTPUT, help="one JSON result on stdout, nothing else")]


ReadVerboseOption = Annotated[bool, typer.Option(
    "--verbose", "-v", metavar="", rich_help_panel=OUTPUT, help="log on stderr")]


def log_to_stderr(verbose: bool) -> None:
    """``-v`` of a command that only reads threads: its log on stderr (it writes no log file)."""
    if verbose:
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.handlers = [RichHandler(console=err, show_path=False, show_time=False)]


def location(home: Path, checkpoint: str | None) -> Location:
    """Where the threads live: --checkpoint if given, else the data folder."""
    return resolve_location(checkpoint or home)


def load_documents(paths: list[Path]) -> list[LoadedDocument]:
    """The documents, or a clear exit 2 naming the first that cannot be read."""
    try:
        return [load_document(p) for p in paths]
    except BadInput as exc:
        raise _fail(str(exc)) from None


def ready(settings: RunSettings) -> RunContext:
    """Check the models and the sandbox before any call; the run's context, with the
    sandbox backend when the protocol runs code."""
    try:
        # a baseline talks to one model: the other role's endpoint is not checked (a
        # remote-only run does not wait for a local server that is down, nor local-only
        # for a remote key)
        protocol = protocol_for(settings)
        if "remote" in protocol.calls:
            preflight(settings.remote, "remote")
        if "local" in protocol.calls:
            preflight_pool(settings, protocol.pools_local)
        if settings.redact == "pii":
            from minionflow.nodes.support.redaction import analyzer

            analyzer()  # loaded before any call: a missing model is an error now, not mid-run
        if not protocol.runs_code:
            return RunContext(settings=settings)
        return RunContext(settings=settings, sandbox=get_backend(settings.sandbox, settings.sandbox_runtime))
    except (ModelConfigError, SandboxUnavailable, RedactionUnavailable, BadInput) as exc:
        raise _fail(str(exc)) from None


def parse_local(value: str | list[str] | None) -> list[ModelSpec] | None:
    """``--local``: one spec, or several (the option repeated, or specs separated by commas)."""
    if not value:
        return None
    given = [value] if isinstance(value, str) else value
    specs = [part for item in given for part in item.split(",") if part.strip()]
    if not specs:
        raise _fail("--local: empty model spec")
    return [spec for part in specs if (spec := _parse_spec(part, "local")) is not None]


def preflight_pool(settings: RunSettings, pooled: bool) -> None:
    """Every local endpoint is checked. One that does not answer gets a warning when
    another does (its first failed job takes it out of the pool until it answers again:
    serving.pool); the start fails when none answers, on any other error (a missing key or
    GGUF file), and when the first does not answer a protocol that talks to it alone (not
    ``pooled``: Minion, local-only)."""
    errors: list[str] = []
    endpoints = [settings.local, *settings.local_pool]
    for spec in endpoints:
        try:
            preflight(spec, "local")
        except EndpointUnreachable as exc:
            if len(endpoints) == 1 or (spec == settings.local and not pooled):
                raise
            errors.append(str(exc))
    if len(errors) == len(endpoints):
        raise ModelConfigError(f"no local endpoint answers: {errors[0]}")
    for error in errors:
        err.print(f"[yellow]warning:[/] {escape(error)}; the other local endpoints take its jobs while it is down",
                  highlight=False)


def _parse_spec(value: str | None, role: str) -> ModelSpec | None:
    if value is None:
        return None
    try:
        return ModelSpec.parse(value)
    except ModelSpecError as exc:
        raise _fail(f"--{role}: {exc}") from None


def resume_command(thread_id: str, home: Path | None, checkpoint: str | None) -> str:
    """The command that continues a thread, with the location options the user gave.
    A checkpoint that came from $MINIONFLOW_CHECKPOINT is left to it; a PostgreSQL URL
    given on the command line is shown with its password masked (fill it in)."""
    parts = ["minionflow", "resume", shlex.quote(thread_id)]
    if home is not None:
        parts += ["--data-dir", shlex.quote(str(home))]
    if checkpoint and checkpoint != os.environ.get("MINIONFLOW_CHECKPOINT"):
        parts += ["--checkpoint", shlex.quote(describe(checkpoint) if is_postgres(checkpoint) else checkpoint)]
    return " ".join(parts)


def review_loop(result: RunResult, where: Location, context: RunContext, json_out: bool, resume: str,
                quiet: bool = False) -> RunResult:
    """While the run waits for a review of the supervisor's code: ask on a terminal,
    or say how to answer with ``minionflow resume`` and stop (exit code 3)."""
    from click import edit
    from minionflow.graphs.run import resume_minions

    while result.status == "awaiting_approval" and result.pending_approval is not None:
        pending = result.pending_approval
        err.print(f"[bold]round {pending['round']}, attempt {pending['attempt']}: the supervisor's code[/]")
        print_code(err, pending["code"])
        if json_out or not sys.stdin.isatty():
            if json_out:
                err.print(f"review it with: {resume} --accept | --reject REASON | --edit FILE", highlight=False, soft_wrap=True)
            _finish(result, json_out, resume)
        choice = typer.prompt("accept, edit or reject? [a/e/r]", default="a").strip().lower()[:1]
        approval: dict[str, Any] = {"action": "accept"}
        if choice == "e":
            approval = {"action": "edit", "code": edit(pending["code"], extension=".py") or pending["code"]}
        elif choice == "r":
            approval = {"action": "reject", "reason": typer.prompt("why (the supervisor will read this)")}
        with RunProgress(err, enabled=not quiet) as progress, pause_on_signals(err, resume, json_out) as control:
            result = resume_minions(result.thread_id, checkpoint=where, approval=approval,
                                    context=replace(context, on_event=progress.handle, control=control))
    return result


def _finish(result: RunResult, json_out: bool, resume: str) -> None:
    if json_out:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        render_result(Console(), result, resume)
    codes = {"answered": EXIT_ANSWERED, "paused": EXIT_PAUSED, "awaiting_approval": EXIT_AWAITING}
    raise typer.Exit(codes.get(result.status, EXIT_FAILED))


def drive(start: Callable[[RunContext], RunResult], context: RunContext, where: Location, json_out: bool, resume: str,
          quiet: bool) -> None:
    """What ``run``, ``resume`` and ``fork`` do around a run, written once: the progress
    lines, pausing on Ctrl-C or SIGTERM, a refusal as one error line, the review of code
    that waits for approval, and the end-of-run message with its exit code.
    ``start(context)`` runs the graph with ``context`` given the progress handler and the
    run control."""
    with RunProgress(err, enabled=not quiet) as progress, pause_on_signals(err, resume, json_out) as control:
        context = replace(context, on_event=progress.handle, control=control)
        try:
            result = start(context)
        except BadInput as exc:
            raise _fail(str(exc)) from None
    _finish(review_loop(result, where, context, json_out, resume, quiet), json_out, resume)
