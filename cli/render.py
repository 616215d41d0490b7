"""Printing a run's result: answer, citations, usage table, thread id."""

from __future__ import annotations

from minionflow.graphs.run import RunResult
from minionflow.graphs.threads import CallView
from minionflow.serving.accounting import UsageSummary
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text


def usage_table(usage: UsageSummary) -> Table:
    table = Table(title="Usage", title_justify="left")
    for column in ("", "calls", "prompt tokens", "completion tokens", "cached", "cost (USD)"):
        table.add_column(column, justify="right" if column else "left")
    for role in ("remote", "local"):
        t = getattr(usage, role)
        calls = f"{t.calls}" + (f" ({t.failed_calls} failed)" if t.failed_calls else "")
        calls += f" + {t.cache_hits} cached" if t.cache_hits else ""
        table.add_row(role, calls, f"{t.prompt_tokens:,}", f"{t.completion_tokens:,}", f"{t.cached_tokens:,}", f"{t.cost_usd:.4f}")
    if usage.remote.calls:
        sent = usage.egress
        table.add_row(f"  from the documents ({sent.document_chars:,} chars)", "", f"{sent.document_tokens:,}", "", "", "")
    table.add_row("[bold]this run[/]", "", "", "", "", f"[bold]{usage.total_cost_usd:.4f}[/]")
    table.add_row(
        "remote only (est.)", "1", f"{usage.remote_only_prompt_tokens:,}", f"{usage.remote_only_completion_tokens:,}",
        "0", f"{usage.remote_only_cost_usd:.4f}",
    )
    return table


def endpoint_table(usage: UsageSummary) -> Table | None:
    """The local endpoints' shares of the jobs, when a pool ran them (None for one endpoint)."""
    if len(usage.endpoints) < 2:
        return None
    table = Table(title="Local endpoints", title_justify="left")
    for column in ("endpoint", "jobs", "moved away", "calls", "tokens", "seconds"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for e in usage.endpoints:
        calls = f"{e.calls}" + (f" ({e.failed_calls} failed)" if e.failed_calls else "")
        calls += f" + {e.cache_hits} cached" if e.cache_hits else ""
        table.add_row(escape(e.endpoint), f"{e.jobs}", f"{e.moved}", calls,
                      f"{e.prompt_tokens + e.completion_tokens:,}", f"{e.latency_s:.1f}")
    return table


def egress_table(usage: UsageSummary, calls: list[CallView]) -> Table:
    """The egress ledger: each remote call, what it sent and how much of that came from
    the documents, with a total per round and for the run."""
    table = Table(title="Sent to the remote model", title_justify="left")
    for column in ("round", "call", "prompt tokens", "from the documents: tokens", "characters", "share"):
        table.add_column(column, justify="left" if column == "call" else "right")

    def share(part: int, whole: int) -> str:
        return f"{part / whole:.0%}" if whole else "-"

    remote = [c for c in calls if c.role == "remote" and not c.cache_hit]
    for row in usage.egress.rounds:
        for c in (c for c in remote if c.round == row.round):
            chars, tokens = c.document_chars or 0, c.document_tokens or 0
            table.add_row(str(c.round), escape(c.node), f"{c.prompt_tokens:,}", f"{tokens:,}", f"{chars:,}",
                          share(tokens, c.prompt_tokens))
        table.add_row(str(row.round), f"[italic]round {row.round}: {row.calls} calls[/]", f"{row.prompt_tokens:,}",
                      f"{row.document_tokens:,}", f"{row.document_chars:,}", share(row.document_tokens, row.prompt_tokens))
    total = usage.egress
    table.add_row("", "[bold]the run[/]", f"{total.prompt_tokens:,}", f"{total.document_tokens:,}",
                  f"{total.document_chars:,}", share(total.document_tokens, total.prompt_tokens))
    return table


def _savings(usage: UsageSummary) -> str:
    ratio = usage.savings_ratio
    if ratio is None:
        return "this run cost nothing at the configured prices"
    if ratio >= 1:
        return f"{ratio:.1f}x cheaper"
    return f"{1 / ratio:.1f}x more expensive (a short document costs less to send whole)"


def render_result(console: Console, result: RunResult, resume: str | None = None) -> None:
    """How a run ended and what to do next; ``resume`` is the command that continues
    the thread (default: ``minionflow resume THREAD``)."""
    resume = resume or f"minionflow resume {result.thread_id}"
    if result.status == "answered":
        console.print(f"[bold]Answer:[/] {escape(result.answer or '(no answer)')}", highlight=False)
        if result.quote:
            console.print(f"[bold]The document says:[/] \"{escape(result.quote)}\"", highlight=False)
        if result.explanation:
            console.print(f"[bold]Why:[/] {escape(result.explanation)}", highlight=False)
        if result.citations:
            console.print("[bold]Citations from the minions:[/]")
            for citation in result.citations:
                console.print(f"  - \"{escape(citation)}\"", highlight=False)
    elif result.status == "awaiting_approval":
        pending = result.pending_approval or {}
        console.print(f"[bold yellow]Waiting for review[/] of the supervisor's code (round {pending.get('round', '?')}, "
                      f"attempt {pending.get('attempt', '?')}); nothing ran yet.", highlight=False)
    elif result.status == "paused":
        console.print("[bold yellow]The run is paused[/] at a step boundary; nothing that finished is lost.")
    else:
        console.print(f"[bold red]The run failed:[/] {escape(str(result.error))}", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if result.usage:
        console.print(usage_table(result.usage))
        if (endpoints := endpoint_table(result.usage)) is not None:
            console.print(endpoints)
        if result.status == "answered":  # an unfinished run has saved nothing yet
            console.print(f"Against sending everything to the remote model: {_savings(result.usage)}", highlight=False)
    rounds = f"rounds: {result.rounds}" if result.status == "answered" else f"rounds finished: {result.rounds}"
    console.print(f"{rounds}   time: {result.elapsed_s:.1f}s   thread: {result.thread_id}", highlight=False)
    if result.status == "awaiting_approval":
        console.print(escape(f"answer with one of:\n  {resume} --accept\n  {resume} --reject REASON\n  {resume} --edit FILE"),
                      highlight=False, soft_wrap=True)
    elif result.status != "answered":
        console.print(escape(f"resume with: {resume}"), highlight=False, soft_wrap=True)


def print_rows(console: Console, title: str, columns: list[str], rows: list[list[str]], *,
               right: frozenset[str] = frozenset(), ids: frozenset[str] = frozenset()) -> None:
    """A listing, with every id whole. In a pipe: tab-separated rows under a header
    line, with no padding, wrapping or markup (``cut -f1`` gives the ids). On a
    terminal wide enough for every cell: a table. On a narrower one: one record per
    row, its id on a line of its own and the other fields wrapped beneath it."""
    if not console.is_terminal:
        clean = [[cell.replace("\t", " ").replace("\n", " ") for cell in row] for row in [columns, *rows]]
        console.file.write("".join("\t".join(row) + "\n" for row in clean))
        return
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows, strict=True)]
    if sum(w + 3 for w in widths) + 1 <= console.width:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, justify="right" if column in right else "left", no_wrap=True)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        return
    if title:
        console.print(f"[italic]{escape(title)}[/]", highlight=False)
    first = next((i for i, c in enumerate(columns) if c in ids), 0)
    for row in rows:
        console.print(f"[bold]{escape(row[first])}[/]", highlight=False, overflow="fold")
        rest = "; ".join(f"{c}: {v}" for i, (c, v) in enumerate(zip(columns, row, strict=True)) if i != first and v)
        console.print(Text(rest, overflow="fold"), highlight=False)


def print_code(console: Console, code: str) -> None:
    """Supervisor code, every character of it: on a terminal, highlighted with line
    numbers and long lines folded (a folded line goes on without a number); in a
    pipe, exactly as written."""
    if not console.is_terminal:
        console.file.write(code if code.endswith("\n") else code + "\n")
        return
    console.print(Syntax(code.rstrip("\n"), "python", line_numbers=True, word_wrap=True))
