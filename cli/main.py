"""The ``minionflow`` command line: the app, with every command registered.

Layers inside ``cli``: reference <- this module <- the command modules (run, compare, evals,
threads, protocols) <- options <- common <- progress, render, signals."""

from __future__ import annotations

# the order of registration is the order of the help
# isort: off
from . import run as _run  # noqa: F401 - registers run
from . import compare as _compare  # noqa: F401 - registers compare
from . import evals as _evals  # noqa: F401 - registers eval and convert
from . import threads as _threads  # noqa: F401 - registers resume, fork, runs, show, history
from . import protocols as _protocols  # noqa: F401 - registers protocols, studio-config
# isort: on
import gc
import sys

import typer
from typer.exceptions import TyperException

from .common import EXIT_BAD_INPUT, app, one_line_error

__all__ = ["app", "main"]


def main() -> None:
    """The ``minionflow`` command. Every user error, the command line's own included
    (an option out of range, an unknown option, a missing argument), ends the same
    way: one ``error:`` line on stderr and exit code 2."""
    # What the imports made (LangGraph, LangChain, pydantic's models: some 120,000 objects)
    # lives as long as the process. Frozen, it is left out of every full collection: those
    # of a long run, and the ones Python runs at exit, which took 0.8 s of every command.
    gc.freeze()
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # `minionflow` alone: the help
            typer.echo(ctx.get_help())
            sys.exit(0)
        hint = f" (see minionflow {ctx.info_name} --help)" if ctx is not None and ctx.parent is not None else ""
        one_line_error(exc.format_message() + hint)
        sys.exit(EXIT_BAD_INPUT)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
