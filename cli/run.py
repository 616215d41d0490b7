"""``minionflow run``: answer a question over documents."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from minionflow.contracts.errors import BadInput
from minionflow.graphs.persistence import data_dir
from minionflow.graphs.run import run_minions

from .common import (
    CheckpointOption,
    DataDir,
    QuietOption,
    _fail,
    _finish,
    _setup_logging,
    app,
    build_settings,
    err,
    load_documents,
    location,
    ready,
    resume_command,
    review_loop,
)
from .progress import RunProgress
from .signals import pause_on_signals


@app.command()
def run(
    documents: Annotated[list[Path], typer.Argument(help="documents to read (.txt, .md, .pdf)", show_default=False, metavar="DOC")],
    question: Annotated[str, typer.Option("--question", "-q", help="the question to answer", metavar="TEXT")],
    remote: Annotated[str | None, typer.Option(envvar="MINIONFLOW_REMOTE", help="supervisor model spec (default: openai:gpt-4o if OPENAI_API_KEY is set, else embedded)", metavar="SPEC")] = None,
    local: Annotated[str, typer.Option(envvar="MINIONFLOW_LOCAL", help="worker model spec", metavar="SPEC")] = "embedded",
    max_rounds: Annotated[int | None, typer.Option(min=1, max=50, help="rounds of MinionS (default 5; 1 with an embedded supervisor)", metavar="N")] = None,
    max_code_attempts: Annotated[int | None, typer.Option(min=1, max=10, help="tries for the supervisor's code per round (default 3; 1 with an embedded supervisor)", metavar="N")] = None,
    chunk_tokens: Annotated[int | None, typer.Option(min=10, help="chunk size of the built-in plan, in tokens (default 1000)", metavar="N")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, max=256, help="local-model calls in flight (default 4)", metavar="N")] = None,
    sandbox: Annotated[str, typer.Option(help="sandbox backend: auto (docker if an engine and the image are there, else bwrap), docker or bwrap", metavar="auto|docker|bwrap")] = "auto",
    approve: Annotated[bool, typer.Option("--approve", help="review the supervisor's code before each execution", metavar="")] = False,
    sandbox_runtime: Annotated[str | None, typer.Option(help="OCI runtime for the docker sandbox, e.g. runsc (gVisor)", metavar="RUNTIME")] = None,
    protocol: Annotated[str, typer.Option(help="minions (default), minion (the chat protocol), remote-only or local-only", metavar="NAME")] = "minions",
    graph: Annotated[str | None, typer.Option(help="a custom graph: module:attr naming a StateGraph or a function (models, sandbox) -> StateGraph", metavar="MODULE:ATTR")] = None,
    thread: Annotated[str | None, typer.Option(help="thread id: resumes that thread if it did not finish", metavar="ID")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON result and nothing else on stdout", metavar="")] = False,
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    quiet: QuietOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="", help="log each step on stderr (the log file always has it)")] = False,
) -> None:
    """Answer QUESTION over DOCUMENTS with the MinionS protocol (or --protocol, --graph)."""
    thread = thread or str(uuid.uuid4())  # known before the run, so that a second Ctrl-C can name it
    resume = resume_command(thread, home, checkpoint)
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
    with RunProgress(err, enabled=not quiet) as progress, pause_on_signals(err, resume, json_out) as control:
        try:
            result = run_minions(docs, question, settings, thread_id=thread, checkpoint=where,
                                 sandbox=backend, on_event=progress.handle, control=control)
        except BadInput as exc:
            raise _fail(str(exc)) from None
    _finish(review_loop(result, where, backend, json_out, resume, quiet), json_out, resume)
