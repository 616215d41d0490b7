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

import copy
import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, TypeVar

import typer
from minionflow.contracts.errors import BadInput
from minionflow.contracts.settings import RunSettings, default_settings, first_error
from minionflow.graphs.protocols import get_protocol, protocol_for
from pydantic import ValidationError

from .common import _fail, _parse_spec, parse_local

F = TypeVar("F", bound=Callable[..., Any])

MODELS, LIMITS, PRIVACY, SANDBOX = "Models", "Limits", "Privacy and budget", "Sandbox"


@dataclass(frozen=True)
class RunOptions:
    """What the command line says of a run's settings (None: the default)."""

    remote: str | None = None
    local: list[str] | None = None
    max_rounds: int | None = None
    max_code_attempts: int | None = None
    plan: str | None = None
    samples: int | None = None
    tasks: int | None = None
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
        """The settings these options set, by ``RunSettings`` field (``SETTING_OF``; the models
        aside: ``settings`` parses them)."""
        out = {}
        for name, (setting, convert) in SETTING_OF.items():
            value = convert(getattr(self, name))
            if value is not None:
                out[setting] = value
        return out

    def settings(self, protocol: str = "minions", graph: str | None = None) -> RunSettings:
        """The run's settings (a clear exit 2 when they are not valid)."""
        return build_settings(self.remote, self.local, protocol=protocol, graph=graph, **self.given())

    def changes(self) -> dict[str, Any]:
        """What a fork changes: the options given, as ``RunSettings`` fields (a new local
        pool replaces the old one whole)."""
        changes = {k: v for k, v in self.given().items() if k != "sandbox"}
        spec = _parse_spec(self.remote, "remote")
        if spec is not None:
            changes["remote"] = spec.model_dump()
        pool = parse_local(self.local)
        if pool is not None:
            changes["local"] = [s.model_dump() for s in pool]
        return changes


# Each option's one declaration: flag, help and panel (the limits are RunSettings', whose
# errors name the option: cli.common._settings_error).
OPTIONS: dict[str, Any] = {
    "remote": Annotated[str | None, typer.Option(
        "--remote", envvar="MINIONFLOW_REMOTE", metavar="SPEC", rich_help_panel=MODELS,
        show_envvar=False,
        help="the supervisor (default openai:gpt-4o if OPENAI_API_KEY is set, else embedded; env MINIONFLOW_REMOTE)")],
    "local": Annotated[list[str] | None, typer.Option(
        "--local", envvar="MINIONFLOW_LOCAL", metavar="SPEC", rich_help_panel=MODELS,
        show_envvar=False,
        help="the worker; several make a pool (default embedded; env MINIONFLOW_LOCAL)")],
    "remote_max_tokens": Annotated[int | None, typer.Option(
        "--remote-max-tokens", metavar="N", rich_help_panel=MODELS,
        help="per supervisor reply, >= 64 (default 1024)")],
    "local_max_tokens": Annotated[int | None, typer.Option(
        "--local-max-tokens", metavar="N", rich_help_panel=MODELS,
        help="per worker reply, >= 16 (default 256)")],
    "concurrency": Annotated[int | None, typer.Option(
        "--concurrency", min=1, max=256, metavar="N", rich_help_panel=MODELS,
        help="requests per server (default 4; embedded 1)")],
    "max_rounds": Annotated[int | None, typer.Option(
        "--max-rounds", min=1, max=50, metavar="N", rich_help_panel=LIMITS,
        help="rounds (default 5; embedded 1, Minion 2)")],
    "max_code_attempts": Annotated[int | None, typer.Option(
        "--max-code-attempts", min=1, max=10, metavar="N", rich_help_panel=LIMITS,
        help="per round (default 3; embedded supervisor 1)")],
    "plan": Annotated[str | None, typer.Option(
        "--plan", metavar="HOW", rich_help_panel=LIMITS,
        help="who makes the jobs: code, builtin or auto (default auto; embedded builtin)")],
    "samples": Annotated[int | None, typer.Option(
        "--samples", metavar="N", rich_help_panel=LIMITS,
        help="replies per job, voted on (default 1)")],
    "tasks": Annotated[int | None, typer.Option(
        "--tasks", min=1, max=20, metavar="N", rich_help_panel=LIMITS,
        help="tasks per round (default 3; embedded 1)")],
    "chunk_tokens": Annotated[int | None, typer.Option(
        "--chunk-tokens", min=10, metavar="N", rich_help_panel=LIMITS,
        help="built-in plan's chunk size (default 1000)")],
    "no_cache": Annotated[bool, typer.Option(
        "--no-cache", metavar="", rich_help_panel=LIMITS,
        help="answer every job anew, no job cache")],
    "max_quote_chars": Annotated[int | None, typer.Option(
        "--max-quote-chars", min=10, metavar="N", rich_help_panel=PRIVACY,
        help="characters per quote sent (default 600)")],
    "redact": Annotated[str | None, typer.Option(
        "--redact", metavar="off|pii", rich_help_panel=PRIVACY,
        help="pii: placeholders for personal data sent out (default off)")],
    "budget_tokens": Annotated[int | None, typer.Option(
        "--budget-tokens", metavar="N", rich_help_panel=PRIVACY,
        help="supervisor tokens per run (default none)")],
    "budget_usd": Annotated[float | None, typer.Option(
        "--budget-usd", metavar="X", rich_help_panel=PRIVACY,
        help="supervisor USD per run (default none)")],
    "sandbox": Annotated[str, typer.Option(
        "--sandbox", metavar="NAME", rich_help_panel=SANDBOX,
        help="docker, bwrap or auto (default auto)")],
    "sandbox_runtime": Annotated[str | None, typer.Option(
        "--sandbox-runtime", metavar="RUNTIME", rich_help_panel=SANDBOX,
        help="OCI runtime for docker, e.g. runsc")],
    "approve": Annotated[bool, typer.Option(
        "--approve", metavar="", rich_help_panel=SANDBOX, help="review the supervisor's code first")],
}
ALL = tuple(OPTIONS)
# The RunSettings field each option sets, and how (the models, parsed apart, aside).
SETTING_OF: dict[str, tuple[str, Callable[[Any], Any]]] = {
    name: {"concurrency": ("local_concurrency", lambda v: v), "tasks": ("tasks_per_round", lambda v: v), "no_cache": ("job_cache", lambda v: False if v else None),
           "approve": ("approve_code", lambda v: True if v else None)}.get(name, (name, lambda v: v))
    for name in OPTIONS if name not in ("remote", "local")}
# ... and back, for a settings error in the words of the command line
OPTION_OF_SETTING = {setting: "--" + name.replace("_", "-") for name, (setting, _) in SETTING_OF.items()}
BATCH = tuple(name for name in ALL if name != "approve")  # compare, eval: no run stops for a review
FORKABLE = ("remote", "local", "remote_max_tokens", "local_max_tokens", "concurrency", "max_rounds",
            "max_code_attempts", "plan", "samples", "tasks", "no_cache", "max_quote_chars", "redact", "budget_tokens", "budget_usd")
assert set(OPTIONS) == {f.name for f in fields(RunOptions)}


def _for_fork(annotated: Any) -> Any:
    """The option's declaration as a fork takes it: no environment variable, and the
    thread's value as its default."""
    info = copy.copy(annotated.__metadata__[0])
    info.envvar = None
    info.help = (re.sub(r"\s*\(default[^)]*\)", "", info.help) + " (default the thread's)").strip()
    return Annotated[annotated.__origin__, info]


def run_options(*names: str, fork: bool = False) -> Callable[[F], F]:
    """Give the command the options ``names`` (keys of ``OPTIONS``), after its own, and
    call it with ``options=RunOptions(...)``; the others keep their defaults. ``fork=True``:
    no option reads an environment variable (a fork changes what is given on its command
    line, not what the environment holds for new runs), and each says that its default is
    the thread's value."""
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
        declared = {name: _for_fork(OPTIONS[name]) if fork else OPTIONS[name] for name in names}
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name],
                                   annotation=declared[name]) for name in names]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            options = RunOptions(**{name: kwargs.pop(name) for name in names})
            return command(*args, options=options, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**hints, **declared}
        return wrapper  # type: ignore[return-value]

    return decorate


def build_settings(remote: str | None, local: str | list[str] | None, *, protocol: str = "minions", graph: str | None = None,
                   **given: Any) -> RunSettings:
    """RunSettings from command-line options (None: the default), or a clear exit 2."""
    try:
        known = get_protocol(protocol)
    except BadInput as exc:
        raise _fail(str(exc)) from None
    try:
        settings = default_settings({"remote": _parse_spec(remote, "remote"), "local": parse_local(local),
                                     "protocol": protocol, "graph": graph, **given}, min_rounds=known.min_rounds)
    except ValidationError as exc:
        raise _fail(_settings_error(exc)) from None
    if settings.approve_code and settings.plan == "builtin" and known.runs_code:
        raise _fail("--approve: there is no code to review, the supervisor is not asked for any (--plan builtin, the "
                    "embedded supervisor's default); give --plan code to review what it writes")
    try:
        run_protocol = protocol_for(settings)
        run_protocol.check(settings)
        if graph:
            run_protocol.build()  # a custom graph is built and checked before anything is written
    except BadInput as exc:
        raise _fail(str(exc)) from None
    return settings


def _settings_error(exc: ValidationError) -> str:
    """A settings error in the words of the command line: the option, what was given,
    what is allowed."""
    where, message = first_error(exc)
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    option = OPTION_OF_SETTING.get(field, "--" + field.replace("_", "-")) if field else "settings"
    if first["type"] == "literal_error":
        return f"{option}: {first['input']!r} is not a choice; choose {first['ctx']['expected']}"
    return f"{option}: {message}" if where else f"invalid settings: {message}"


__all__ = ["ALL", "BATCH", "FORKABLE", "OPTIONS", "RunOptions", "build_settings", "run_options"]
