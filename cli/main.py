"""The ``minionflow`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from minionflow.graphs.persistence import Location, data_dir, resolve_location
from minionflow.graphs.protocols import check_graph, load_custom_graph
from minionflow.graphs.run import RunResult, run_minions
from minionflow.graphs.settings import PROTOCOLS, ModelSpec, ModelSpecError, RunSettings, default_settings, first_error
from minionflow.nodes.documents import BadInput, LoadedDocument, load_document
from minionflow.nodes.models import ModelConfigError, preflight
from minionflow.sandbox.base import SandboxUnavailable
from minionflow.sandbox.select import get_backend
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.syntax import Syntax

from .progress import RunProgress
from .render import render_result
from .signals import EXIT_PAUSED, pause_on_signals

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Local-remote LLM collaboration (MinionS) over long documents.")
err = Console(stderr=True)

EXIT_ANSWERED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_AWAITING = 0, 1, 2, 3


@app.callback()
def main() -> None:
    """minionflow: MinionS and friends as checkpointed LangGraph graphs."""


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _setup_logging(verbose: bool, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    file_handler = logging.FileHandler(home / "minionflow.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = RichHandler(console=err, show_path=False, show_time=False)
    console.setLevel(logging.INFO if verbose else logging.ERROR)
    root.handlers = [file_handler, console]
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="folder for the log and, by default, the SQLite checkpoints (default $MINIONFLOW_HOME or ~/.local/share/minionflow)")]
CheckpointOption = Annotated[str | None, typer.Option(
    "--checkpoint", envvar="MINIONFLOW_CHECKPOINT",
    help="where threads are kept: a folder (SQLite) or a postgresql:// URL (default: the data dir)")]


def location(home: Path, checkpoint: str | None) -> Location:
    """Where the threads live: --checkpoint if given, else the data folder."""
    return resolve_location(checkpoint or home)


def build_settings(remote: str | None, local: str | None, *, protocol: str = "minions", graph: str | None = None,
                   **given: Any) -> RunSettings:
    """RunSettings from command-line options (None: the default), or a clear exit 2."""
    if protocol not in PROTOCOLS:
        raise _fail(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    try:
        settings = default_settings({"remote": _parse_spec(remote, "remote"), "local": _parse_spec(local, "local"),
                                     "protocol": protocol, "graph": graph, **given})
    except ValidationError as exc:
        where, message = first_error(exc)
        raise _fail(f"invalid setting {where}: {message}" if where else f"invalid settings: {message}") from None
    if graph:
        try:
            check_graph(graph, load_custom_graph(graph)(None, None))
        except BadInput as exc:
            raise _fail(str(exc)) from None
    return settings


def load_documents(paths: list[Path]) -> list[LoadedDocument]:
    """The documents, or a clear exit 2 naming the first that cannot be read."""
    try:
        return [load_document(p) for p in paths]
    except BadInput as exc:
        raise _fail(str(exc)) from None


def ready(settings: RunSettings) -> Any:
    """Check the models and the sandbox before any call; the sandbox backend, or None
    for protocols that run no code."""
    try:
        for spec, role in ((settings.remote, "remote"), (settings.local, "local")):
            preflight(spec, role)  # type: ignore[arg-type]
        if settings.protocol != "minions" and not settings.graph:
            return None
        return get_backend(settings.sandbox, settings.sandbox_runtime)
    except (ModelConfigError, SandboxUnavailable) as exc:
        raise _fail(str(exc)) from None


def _parse_spec(value: str | None, role: str) -> ModelSpec | None:
    if value is None:
        return None
    try:
        return ModelSpec.parse(value)
    except ModelSpecError as exc:
        raise _fail(f"--{role}: {exc}") from None


@app.command()
def run(
    documents: Annotated[list[Path], typer.Argument(help="documents to read (.txt, .md, .pdf)", show_default=False)],
    question: Annotated[str, typer.Option("--question", "-q", help="the question to answer")],
    remote: Annotated[str | None, typer.Option(envvar="MINIONFLOW_REMOTE", help="supervisor model spec (default: openai:gpt-4o if OPENAI_API_KEY is set, else embedded)")] = None,
    local: Annotated[str, typer.Option(envvar="MINIONFLOW_LOCAL", help="worker model spec")] = "embedded",
    max_rounds: Annotated[int | None, typer.Option(min=1, max=50, help="rounds of MinionS (default 5; 1 with an embedded supervisor)")] = None,
    max_code_attempts: Annotated[int | None, typer.Option(min=1, max=10, help="tries for the supervisor's code per round (default 3; 1 with an embedded supervisor)")] = None,
    chunk_tokens: Annotated[int | None, typer.Option(min=10, help="chunk size of the built-in plan, in tokens (default 1000)")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, max=256, help="local-model calls in flight")] = None,
    sandbox: Annotated[str, typer.Option(help="sandbox backend: auto (docker if an engine and the image are there, else bwrap), docker or bwrap")] = "auto",
    approve: Annotated[bool, typer.Option("--approve", help="review the supervisor's code before each execution")] = False,
    sandbox_runtime: Annotated[str | None, typer.Option(help="OCI runtime for the docker sandbox, e.g. runsc (gVisor)")] = None,
    protocol: Annotated[str, typer.Option(help="minions (default), minion (the chat protocol), remote-only or local-only")] = "minions",
    graph: Annotated[str | None, typer.Option(help="a custom graph: module:attr naming a StateGraph or a function (models, sandbox) -> StateGraph")] = None,
    thread: Annotated[str | None, typer.Option(help="thread id: resumes that thread if it did not finish")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON result and nothing else on stdout")] = False,
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Answer QUESTION over DOCUMENTS with the MinionS protocol (or --protocol, --graph)."""
    home = home or data_dir()
    _setup_logging(verbose, home)
    where = location(home, checkpoint)
    if not question.strip():
        raise _fail("the question (-q) is empty")
    settings = build_settings(remote, local, protocol=protocol, graph=graph, sandbox=sandbox, sandbox_runtime=sandbox_runtime,
                              approve_code=approve, max_rounds=max_rounds, max_code_attempts=max_code_attempts,
                              chunk_tokens=chunk_tokens, local_concurrency=concurrency)
    docs = load_documents(documents)
    backend = ready(settings)
    remote_spec = settings.remote
    if remote_spec.kind == "embedded" and not json_out:
        err.print(
            "[yellow]note:[/] no remote model is configured, so the embedded 135M model plays the supervisor too: "
            "answers will be weak. Set OPENAI_API_KEY, or pass --remote openai:gpt-4o or --remote MODEL@http://host/v1.",
            highlight=False,
        )
    with RunProgress(err, enabled=not json_out) as progress, pause_on_signals(err) as control:
        try:
            result = run_minions(docs, question, settings, thread_id=thread, checkpoint=where,
                                 sandbox=backend, on_event=progress.handle, control=control)
        except BadInput as exc:
            raise _fail(str(exc)) from None
    _finish(review_loop(result, where, backend, json_out), json_out)


def review_loop(result: RunResult, where: Location, backend: Any, json_out: bool) -> RunResult:
    """While the run waits for a review of the supervisor's code: ask on a terminal,
    or say how to answer with ``minionflow resume`` and stop (exit code 3)."""
    from click import edit
    from minionflow.graphs.run import resume_minions

    while result.status == "awaiting_approval" and result.pending_approval is not None:
        pending = result.pending_approval
        err.print(f"[bold]round {pending['round']}, attempt {pending['attempt']}: the supervisor's code[/]")
        err.print(Syntax(pending["code"], "python"))
        if json_out or not sys.stdin.isatty():
            err.print(f"review it with: minionflow resume {result.thread_id} --accept | --reject REASON | --edit FILE",
                      highlight=False, soft_wrap=True)
            _finish(result, json_out)
        choice = typer.prompt("accept, edit or reject? [a/e/r]", default="a").strip().lower()[:1]
        approval: dict[str, Any] = {"action": "accept"}
        if choice == "e":
            approval = {"action": "edit", "code": edit(pending["code"], extension=".py") or pending["code"]}
        elif choice == "r":
            approval = {"action": "reject", "reason": typer.prompt("why (the supervisor will read this)")}
        with RunProgress(err) as progress, pause_on_signals(err) as control:
            result = resume_minions(result.thread_id, checkpoint=where, sandbox=backend, on_event=progress.handle,
                                    control=control, approval=approval)
    return result


def _finish(result: RunResult, json_out: bool) -> None:
    if json_out:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        render_result(Console(), result)
    codes = {"answered": EXIT_ANSWERED, "paused": EXIT_PAUSED, "awaiting_approval": EXIT_AWAITING}
    raise typer.Exit(codes.get(result.status, EXIT_FAILED))


from . import compare as _compare  # noqa: E402,F401 - registers compare
from . import evals as _evals  # noqa: E402,F401 - registers eval and convert
from . import threads as _threads  # noqa: E402,F401 - registers resume, runs, show, history

if __name__ == "__main__":
    app()
