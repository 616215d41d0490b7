"""``minionflow run``: answer a question over documents."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from minionflow.graphs.run import run_minions
from minionflow.storage.persistence import data_dir

from .common import (
    CheckpointOption,
    DataDir,
    QuietOption,
    ResultJsonOption,
    VerboseOption,
    _fail,
    _setup_logging,
    app,
    drive,
    err,
    load_documents,
    location,
    ready,
    resume_command,
)
from .options import ALL, RunOptions, run_options


@app.command()
@run_options(*ALL)
def run(
    documents: Annotated[list[Path], typer.Argument(help="documents to read (.txt, .md, .pdf)", show_default=False, metavar="DOC")],
    question: Annotated[str, typer.Option("--question", "-q", help="the question to answer", metavar="TEXT")],
    options: RunOptions,
    protocol: Annotated[str, typer.Option(help="a protocol `minionflow protocols` lists (default minions)", metavar="NAME")] = "minions",
    graph: Annotated[str | None, typer.Option(help="your own graph instead of a protocol's", metavar="MODULE:ATTR")] = None,
    thread: Annotated[str | None, typer.Option(help="the thread id; an unfinished one resumes", metavar="ID")] = None,
    json_out: ResultJsonOption = False,
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Answer a question over documents."""
    thread = thread or str(uuid.uuid4())  # known before the run, so that a second Ctrl-C can name it
    resume = resume_command(thread, home, checkpoint)
    home = home or data_dir()
    _setup_logging(verbose, home)
    where = location(home, checkpoint)
    if not question.strip():
        raise _fail("the question (-q) is empty")
    settings = options.settings(protocol, graph)
    docs = load_documents(documents)
    context = ready(settings)
    remote_spec = settings.remote
    if remote_spec.kind == "embedded" and not json_out:
        err.print(
            "[yellow]note:[/] no remote model is configured, so the embedded 135M model plays the supervisor too: "
            "answers will be weak. Set OPENAI_API_KEY, or pass --remote openai:gpt-4o or --remote MODEL@http://host/v1.",
            highlight=False,
        )
    drive(lambda context: run_minions(docs, question, context, thread_id=thread, checkpoint=where),
          context, where, json_out, resume, quiet)
