"""``minionflow run``: answer a question over documents."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from minionflow.graphs.run import run_minions
from minionflow.storage.persistence import data_dir

from .common import (
    BudgetTokensOption,
    BudgetUsdOption,
    CheckpointOption,
    ChunkTokensOption,
    ConcurrencyOption,
    DataDir,
    LocalMaxTokensOption,
    LocalOption,
    MaxQuoteCharsOption,
    MaxRoundsOption,
    NoCacheOption,
    QuietOption,
    RedactOption,
    RemoteMaxTokensOption,
    RemoteOption,
    ResultJsonOption,
    SandboxOption,
    VerboseOption,
    _fail,
    _setup_logging,
    app,
    build_settings,
    drive,
    err,
    load_documents,
    location,
    ready,
    resume_command,
)


@app.command()
def run(
    documents: Annotated[list[Path], typer.Argument(help="documents to read (.txt, .md, .pdf)", show_default=False, metavar="DOC")],
    question: Annotated[str, typer.Option("--question", "-q", help="the question to answer", metavar="TEXT")],
    remote: RemoteOption = None,
    local: LocalOption = None,
    max_rounds: MaxRoundsOption = None,
    max_code_attempts: Annotated[int | None, typer.Option(min=1, max=10, help="tries for the supervisor's code per round (default 3; 1 with an embedded supervisor)", metavar="N")] = None,
    chunk_tokens: ChunkTokensOption = None,
    remote_max_tokens: RemoteMaxTokensOption = None,
    local_max_tokens: LocalMaxTokensOption = None,
    concurrency: ConcurrencyOption = None,
    no_cache: NoCacheOption = False,
    max_quote_chars: MaxQuoteCharsOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_usd: BudgetUsdOption = None,
    redact: RedactOption = None,
    sandbox: SandboxOption = "auto",
    approve: Annotated[bool, typer.Option("--approve", help="review the supervisor's code before each execution", metavar="")] = False,
    sandbox_runtime: Annotated[str | None, typer.Option(help="OCI runtime for the docker sandbox, e.g. runsc (gVisor)", metavar="RUNTIME")] = None,
    protocol: Annotated[str, typer.Option(help="minions (default), minion (the chat protocol), remote-only or local-only", metavar="NAME")] = "minions",
    graph: Annotated[str | None, typer.Option(help="a custom graph: module:attr naming a StateGraph or a function (models, sandbox) -> StateGraph", metavar="MODULE:ATTR")] = None,
    thread: Annotated[str | None, typer.Option(help="thread id: resumes that thread if it did not finish", metavar="ID")] = None,
    json_out: ResultJsonOption = False,
    home: DataDir = None,
    checkpoint: CheckpointOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
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
                              chunk_tokens=chunk_tokens, local_concurrency=concurrency, job_cache=False if no_cache else None,
                              max_quote_chars=max_quote_chars, budget_tokens=budget_tokens,
                              budget_usd=budget_usd, redact=redact, remote_max_tokens=remote_max_tokens,
                              local_max_tokens=local_max_tokens)
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
