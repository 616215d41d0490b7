"""The egress ledger: for every remote call, how much of what it sent came from the
documents, per round and for the run; ``max_quote_chars``; and how ``run`` and
``show --egress`` print it. (Minion and the baselines: tests/test_protocols.py.)"""

from __future__ import annotations

from conftest import secret_doc
from minionflow.cli.render import egress_table, usage_table
from minionflow.graphs.threads import CallView
from minionflow.serving.accounting import egress
from minionflow.storage.store import get_json
from rich.console import Console

QUOTE = "The secret number is 42"


def kept_outputs(run):  # type: ignore[no-untyped-def]
    return [k for r in run.values["rounds"] for k in get_json(run.store, r["kept_ref"])]


def test_minions_ledger_counts_the_forwarded_outputs_and_nothing_else(run_fake):
    run = run_fake()
    remote = [u for u in run.usage if u["role"] == "remote"]
    assert {u["node"] for u in remote} == {"decompose", "aggregate"}
    assert all(u["document_chars"] == u["document_tokens"] == 0 for u in remote if u["node"] == "decompose")
    kept = kept_outputs(run)
    pieces = [x for k in kept for x in (k["answer"], k["citation"], k["explanation"]) if x]
    (aggregate,) = [u for u in remote if u["node"] == "aggregate"]
    assert aggregate["document_chars"] == sum(map(len, pieces)) > 0 and aggregate["document_tokens"] > 0
    prompt = run.remote.prompts[-1]  # what the supervisor was sent holds each piece as counted
    assert all(piece in prompt for piece in pieces)
    ledger = egress(run.usage)
    assert [(r.round, r.calls, r.document_chars) for r in ledger.rounds] == [(1, 2, aggregate["document_chars"])]
    assert ledger.prompt_tokens == sum(u["prompt_tokens"] for u in remote)
    assert ledger.document_tokens < ledger.prompt_tokens  # instructions and the task are the rest
    doc = secret_doc().text
    assert not any(line in prompt for line in doc.splitlines() if len(line) > 60 and QUOTE not in line)


def test_max_quote_chars_caps_each_quote_that_leaves(run_fake):
    whole = run_fake()
    capped = run_fake(max_quote_chars=12)
    quotes = [k["citation"] for k in kept_outputs(capped) if k["citation"]]
    assert quotes and all(q.endswith(" [...]") and len(q) <= 12 + len(" [...]") for q in quotes)
    assert all(q[: -len(" [...]")] in capped.remote.prompts[-1] for q in quotes)
    assert QUOTE not in capped.remote.prompts[-1] and QUOTE in whole.remote.prompts[-1]
    assert egress(capped.usage).document_chars < egress(whole.usage).document_chars


def test_the_ledger_is_printed_by_run_and_show(run_fake):
    from minionflow.contracts.settings import PriceTable
    from minionflow.serving.accounting import summarize

    run = run_fake()
    usage = summarize(run.usage, PriceTable(), "What is the secret number?", [secret_doc().text], "42")
    console = Console(record=True, width=160)
    console.print(usage_table(usage))
    calls = [CallView(transcript=None, **{k: v for k, v in u.items() if k != "transcript"}) for u in run.usage]
    console.print(egress_table(usage, calls))
    text = console.export_text()
    sent = usage.egress
    assert f"from the documents ({sent.document_chars:,} chars)" in text
    share = f"{sent.document_tokens / sent.prompt_tokens:.0%}"
    assert "the run" in text and share in text
    rows = [line for line in text.splitlines() if "aggregate" in line or "decompose" in line]
    assert len(rows) == 2 and any(f"{sent.document_chars:,}" in line for line in rows)
