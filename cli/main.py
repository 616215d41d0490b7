"""The ``minionflow`` command line: the app, with every command registered.

Layers inside ``cli``: this module <- the command modules (run, compare, evals,
threads) <- common <- progress, render, signals."""

from __future__ import annotations

# the order of registration is the order of the help
# isort: off
from . import run as _run  # noqa: F401 - registers run
from . import compare as _compare  # noqa: F401 - registers compare
from . import evals as _evals  # noqa: F401 - registers eval and convert
from . import threads as _threads  # noqa: F401 - registers resume, fork, runs, show, history
# isort: on
from .common import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
