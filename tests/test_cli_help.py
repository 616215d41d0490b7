"""Every command's ``--help`` as a terminal shows it, at 80 and 120 columns: nothing cut,
no ``<type>`` metavar, defaults said one way, summaries wrapped by the terminal rather
than by the docstring, and ``run --help`` on one screen."""

from __future__ import annotations

import re

import pytest
import typer.main
from minionflow.cli.main import app
from typer.testing import CliRunner

COMMAND = typer.main.get_command(app)
NAMES = [None, *COMMAND.commands]  # None: the app's own help


def render(name: str | None, columns: int) -> str:
    args = [name, "--help"] if name else ["--help"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def entries(text: str, panel: str) -> list[list[str]]:
    """The rows of a help panel, each as its lines (inside the border)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"╭─ {panel} "))
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("╰"):
            break
        inner = line[1:-1]
        if inner[1:2].strip():  # a new row starts at the panel's left edge
            rows.append([inner])
        else:
            rows[-1].append(inner)
    return rows


def greedy_wrap_breaks(rows: list[list[str]], column: int) -> list[str]:
    """Lines of a description column that end although the next word would have fitted:
    a line break written in the text, not made by the terminal."""
    bad = []
    for row in rows:
        for line, following in zip(row, row[1:], strict=False):
            text, after = line[column:].rstrip(), following[column:].strip()
            width = len(line) - column - 1  # the column's last cell is padding
            if after and len(text) + 1 + len(after.split()[0]) <= width:
                bad.append(f"{text!r} / {after!r}")
    return bad


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("name", NAMES, ids=lambda n: n or "minionflow")
def test_help_fits_and_reads_plainly(name: str | None, columns: int) -> None:
    text = render(name, columns)
    assert max(len(line) for line in text.splitlines()) == columns  # drawn at the terminal's width
    assert "…" not in text, "a default or help text is cut"
    assert not re.search(r"<[a-z][\w\[\], ]*>", text), "a <type> metavar"
    assert not re.search(r"\{[A-Z_]+\}", text), "typer's {ARG} usage"
    assert "[default:" not in text, "a default shown typer's way beside ones said in the help"
    assert "<bool>" not in text and "x<=" not in text and "<=x" not in text


@pytest.mark.parametrize("columns", [80, 120])
def test_command_summaries_are_wrapped_by_the_terminal(columns: int) -> None:
    text = render(None, columns)
    rows = entries(text, "Commands")
    assert {row[0].split()[0] for row in rows} == set(COMMAND.commands)
    column = rows[0][0].index(rows[0][0].split()[1])  # where the summaries start
    assert greedy_wrap_breaks(rows, column) == []
    for name, command in COMMAND.commands.items():
        assert "\n" not in (command.short_help or ""), name


def test_the_wrap_check_finds_a_written_line_break() -> None:
    rows = [["  run    Answer a question over documents with each protocol and print       ",
             "         tokens                                                              "]]
    assert greedy_wrap_breaks(rows, 9) == []
    rows = [["  run    Answer a question over documents, tokens, cost                      ",
             "         and time side by side                                               "]]
    assert greedy_wrap_breaks(rows, 9) == ["'Answer a question over documents, tokens, cost' / 'and time side by side'"]


DEFAULT = re.compile(r"\(default [^)]+\)$")  # the one form: "(default X)" ending the help


@pytest.mark.parametrize("name", [n for n in NAMES if n])
def test_every_default_is_said_in_the_help_one_way(name: str) -> None:
    """An option with a default other than none or off says it at the end of its help as
    ``(default X)``; no help says a default any other way."""
    command = COMMAND.commands[name]
    for param in command.params:
        if param.param_type_name != "option":
            continue
        text = param.help or ""
        assert text.count("default") == len(DEFAULT.findall(text)), (name, param.opts, text)
        if not param.is_flag and not param.required and param.default not in (None, False, ()):
            assert DEFAULT.search(text), (name, param.opts, param.default)


def test_run_help_fits_one_screen() -> None:
    text = render("run", 80)
    assert len(text.splitlines()) <= 60
    panels = re.findall(r"╭─ (.+?) ─", text)
    assert panels == ["Arguments", "Options", "Output", "Storage", "Models", "Limits", "Privacy and budget", "Sandbox"]


def test_fork_says_an_option_not_given_keeps_the_threads_value() -> None:
    command = COMMAND.commands["fork"]
    for param in command.params:
        if param.param_type_name == "option" and param.name not in ("at", "json_out", "home", "checkpoint", "quiet", "verbose"):
            assert (param.help or "").endswith("(default the thread's)"), param.opts
            assert param.help.count("(default") == 1, param.opts
    assert "keeps the thread's value" in render("fork", 80)


@pytest.mark.parametrize("name", ["compare", "eval", "fork"])  # resume: below
def test_a_command_says_which_of_runs_options_it_does_not_take(name: str) -> None:
    """Each of run's options a command lacks is named in its help (the question aside: eval
    reads its questions from the suite). resume takes none, and says why."""
    run_flags = {p.opts[0] for p in COMMAND.commands["run"].params if p.param_type_name == "option"}
    command = COMMAND.commands[name]
    own = {p.opts[0] for p in command.params if p.param_type_name == "option"}
    help_text = " ".join((command.help or "").split())
    missing = sorted(run_flags - own - {"--question"})
    unsaid = [flag for flag in missing if not re.search(rf"{re.escape(flag)}(?![\w-])", help_text)]
    assert unsaid == [], (name, missing)


def test_resume_says_the_thread_keeps_its_settings() -> None:
    command = COMMAND.commands["resume"]
    assert not {"remote", "max_rounds", "sandbox"} & {p.name for p in command.params}
    assert "keeps the settings it started with (fork changes them)" in " ".join((command.help or "").split())


def test_the_cli_reference_in_docs_is_current() -> None:
    """docs/cli.md is what the app writes (python -m minionflow.cli.reference)."""
    from pathlib import Path

    from minionflow.cli.reference import markdown

    written = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == markdown(), "docs/cli.md is stale: python -m minionflow.cli.reference > docs/cli.md"
    for name in COMMAND.commands:
        assert f"## `minionflow {name}`" in written


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("name", [n for n in NAMES if n])
def test_command_descriptions_are_wrapped_by_the_terminal(name: str, columns: int) -> None:
    """A command's own description (between the usage line and the first panel): each of its
    lines ends only where the next word would not fit."""
    lines = render(name, columns).splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("Usage:")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    text = [line.rstrip() for line in lines[start:end]]
    bad = [f"{a.strip()!r} / {b.strip()!r}" for a, b in zip(text, text[1:], strict=False)
           if a.strip() and b.strip() and len(a) + 1 + len(b.split()[0]) <= columns - 1]
    assert bad == []
