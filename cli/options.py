"""The options that shape a run's settings, declared once: ``RunOptions`` (what becomes
``RunSettings``) and the ``run_options(...)`` decorator, which gives a command the options
it names, each with the same flag, help, limits and help panel on every command, and hands
them to it as one ``options: RunOptions`` argument.

    @app.command()
    @run_options(*ALL)
    def run(documents: ..., options: RunOptions, ...) -> None:
        settings = options.settings(protocol="minions")

Which command takes which: ``run`` and ``compare`` every one; ``eval`` every one but
``--approve`` (an eval does not stop for a review); ``fork`` those a thread may change when
it is forked (``FORKABLE``), given only when changed; ``resume`` none (a thread keeps its
settings)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, TypeVar

import typer
from minionflow.contracts.settings import RunSettings

from .common import build_settings, parse_local

F = TypeVar("F", bound=Callable[..., Any])

MODELS, LIMITS, PRIVACY, SANDBOX = "Models", "Limits", "Privacy and budget", "Sandbox"


@dataclass(frozen=True)
class RunOptions:
    """What the command line says of a run's settings (None: the default)."""

    remote: str | None = None
    local: list[str] | None = None
    max_rounds: int | None = None
    max_code_attempts: int | None = None
    chunk_tokens: int | None = None
    remote_max_tokens: int | None = None
    local_max_tokens: int | None = None
    concurrency: int | None = None
    no_cache: bool = False
    max_quote_chars: int | None = None
    budget_tokens: int | None = None
    budget_usd: float | None = None
    redact: str | None = None
    sandbox: str = "auto"
    sandbox_runtime: str | None = None
    approve: bool = False

    def given(self) -> dict[str, Any]:
        """The settings these options set, by ``RunSettings`` field (the models as given)."""
        values = {"max_rounds": self.max_rounds, "max_code_attempts": self.max_code_attempts,
                  "chunk_tokens": self.chunk_tokens, "remote_max_tokens": self.remote_max_tokens,
                  "local_max_tokens": self.local_max_tokens, "local_concurrency": self.concurrency,
                  "job_cache": False if self.no_cache else None, "max_quote_chars": self.max_quote_chars,
                  "budget_tokens": self.budget_tokens, "budget_usd": self.budget_usd, "redact": self.redact,
                  "sandbox": self.sandbox, "sandbox_runtime": self.sandbox_runtime,
                  "approve_code": self.approve or None}
        return {k: v for k, v in values.items() if v is not None}

    def settings(self, protocol: str = "minions", graph: str | None = None) -> RunSettings:
        """The run's settings (a clear exit 2 when they are not valid)."""
        return build_settings(self.remote, self.local, protocol=protocol, graph=graph, **self.given())

    def changes(self) -> dict[str, Any]:
        """What a fork changes: the options given, as ``RunSettings`` fields (a new local
        pool replaces the old one whole)."""
        from .common import _parse_spec

        changes = {k: v for k, v in self.given().items() if k != "sandbox"}
        spec = _parse_spec(self.remote, "remote")
        if spec is not None:
            changes["remote"] = spec.model_dump()
        pool = parse_local(self.local)
        if pool is not None:
            changes["local"] = [s.model_dump() for s in pool]
            changes["local_pool"] = []
        return changes


# Each option's one declaration: flag, help and panel (the limits are RunSettings', whose
# errors name the option: cli.common._settings_error).
OPTIONS: dict[str, Any] = {
    "remote": Annotated[str | None, typer.Option(
        "--remote", envvar="MINIONFLOW_REMOTE", metavar="SPEC", rich_help_panel=MODELS,
        help="supervisor model spec (default: openai:gpt-4o if OPENAI_API_KEY is set, else embedded)")],
    "local": Annotated[list[str] | None, typer.Option(
        "--local", envvar="MINIONFLOW_LOCAL", metavar="SPEC", rich_help_panel=MODELS,
        help="worker model spec (default embedded); several, repeated or separated by commas, make a pool the jobs "
        "are spread over, each with its own ';slots=N'")],
    "remote_max_tokens": Annotated[int | None, typer.Option(
        "--remote-max-tokens", metavar="N", rich_help_panel=MODELS,
        help="cap each supervisor reply at N tokens (default 1024, at least 64)")],
    "local_max_tokens": Annotated[int | None, typer.Option(
        "--local-max-tokens", metavar="N", rich_help_panel=MODELS,
        help="cap each worker reply at N tokens (default 256, at least 16)")],
    "concurrency": Annotated[int | None, typer.Option(
        "--concurrency", min=1, max=256, metavar="N", rich_help_panel=MODELS,
        help="worker calls in flight on a served endpoint (default 4; the embedded server takes one at a time)")],
    "max_rounds": Annotated[int | None, typer.Option(
        "--max-rounds", min=1, max=50, metavar="N", rich_help_panel=LIMITS,
        help="rounds of MinionS, turns of Minion (default 5; with an embedded supervisor 1, Minion 2)")],
    "max_code_attempts": Annotated[int | None, typer.Option(
        "--max-code-attempts", min=1, max=10, metavar="N", rich_help_panel=LIMITS,
        help="tries for the supervisor's code per round (default 3; 1 with an embedded supervisor)")],
    "chunk_tokens": Annotated[int | None, typer.Option(
        "--chunk-tokens", min=10, metavar="N", rich_help_panel=LIMITS,
        help="chunk size of the built-in plan, in tokens (default 1000)")],
    "no_cache": Annotated[bool, typer.Option(
        "--no-cache", metavar="", rich_help_panel=LIMITS,
        help="ask every job anew, not from the job cache of jobs answered before")],
    "max_quote_chars": Annotated[int | None, typer.Option(
        "--max-quote-chars", min=10, metavar="N", rich_help_panel=PRIVACY,
        help="cap each quote sent to the supervisor at N characters (default: the answer cap, 600)")],
    "redact": Annotated[str | None, typer.Option(
        "--redact", metavar="off|pii", rich_help_panel=PRIVACY,
        help="pii: personal data in what the documents give the supervisor becomes placeholders, restored locally "
        "(default off)")],
    "budget_tokens": Annotated[int | None, typer.Option(
        "--budget-tokens", metavar="N", rich_help_panel=PRIVACY,
        help="cap the supervisor's tokens for the run: a call that would cross it is not made (default: none)")],
    "budget_usd": Annotated[float | None, typer.Option(
        "--budget-usd", metavar="X", rich_help_panel=PRIVACY,
        help="cap the supervisor's cost for the run, in US dollars (default: none)")],
    "sandbox": Annotated[str, typer.Option(
        "--sandbox", metavar="auto|docker|bwrap", rich_help_panel=SANDBOX,
        help="where the supervisor's code runs: auto is docker if an engine and the image are there, else bwrap")],
    "sandbox_runtime": Annotated[str | None, typer.Option(
        "--sandbox-runtime", metavar="RUNTIME", rich_help_panel=SANDBOX,
        help="OCI runtime for the docker sandbox, e.g. runsc (gVisor)")],
    "approve": Annotated[bool, typer.Option(
        "--approve", metavar="", rich_help_panel=SANDBOX, help="review the supervisor's code before each execution")],
}
ALL = tuple(OPTIONS)
BATCH = tuple(name for name in ALL if name != "approve")  # compare, eval: no run stops for a review
FORKABLE = ("remote", "local", "remote_max_tokens", "local_max_tokens", "concurrency", "max_rounds",
            "max_code_attempts", "no_cache", "max_quote_chars", "redact", "budget_tokens", "budget_usd")
assert set(OPTIONS) == {f.name for f in fields(RunOptions)}


def run_options(*names: str) -> Callable[[F], F]:
    """Give the command the options ``names`` (keys of ``OPTIONS``), after its own, and
    call it with ``options=RunOptions(...)``; the others keep their defaults."""
    unknown = set(names) - set(OPTIONS)
    if unknown:
        raise ValueError(f"no run options {sorted(unknown)}")
    defaults = {f.name: f.default for f in fields(RunOptions)}

    def decorate(command: F) -> F:
        signature = inspect.signature(command)
        # the command's own annotations, evaluated in its module (they are strings there)
        hints = {k: v for k, v in inspect.get_annotations(command, eval_str=True).items() if k != "options"}
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
               if p.name != "options"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name],
                                   annotation=OPTIONS[name]) for name in names]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            options = RunOptions(**{name: kwargs.pop(name) for name in names})
            return command(*args, options=options, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**hints, **{name: OPTIONS[name] for name in names}}
        return wrapper  # type: ignore[return-value]

    return decorate


__all__ = ["ALL", "BATCH", "FORKABLE", "OPTIONS", "RunOptions", "run_options"]
