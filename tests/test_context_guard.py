"""The context guard (serving/context_guard.py): a job whose prompt would not fit the local
model's context is read in parts split at sentence ends, merged into one output; a chunk
that cannot be split fails with the reason; Minion's whole-document turn is refused
before it is sent. Never a prompt cut by the server.

Against the real HTTP test server (tests/openai_server.py) running its model with a
window it reports as Ollama or llama.cpp do, and refusing (and recording) any prompt
that does not fit; and against the real embedded server, which counts exactly."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from conftest import CLI, cli_env, default_local, final_json, worker_json
from fakes import FakeProvider, PromptFake, bind
from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore
from minionflow.contracts.schemas import JobOutput
from minionflow.contracts.settings import ModelSpec, ModelSpecError, RunSettings
from minionflow.contracts.state import JobBatch, JobRecord
from minionflow.graphs.run import run_minions
from minionflow.nodes.parallel_minion_map import parallel_minion_map
from minionflow.serving.context_guard import (
    OLLAMA_DEFAULT_CTX,
    ContextGuard,
    ContextOverflow,
    exact_counter,
    find_guard,
    pieces,
)
from minionflow.serving.models import DefaultModelProvider
from minionflow.serving.tokens import count_tokens
from minionflow.storage.documents import LoadedDocument
from minionflow.storage.store import get_json, put_json, put_text
from openai_server import OpenAIServer

QUESTION = "What is the secret number?"
ONE_CHUNK_CODE = '''```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    return [JobManifest(chunk=doc, task="Find the secret number", chunk_id=0, task_id=0) for doc in context]
```'''


def long_text(sentences: int = 150, secret_at: int | None = None) -> str:
    parts = [f"Sentence {i} talks about harbours, cranes and weather in general terms." for i in range(sentences)]
    parts[sentences * 2 // 3 if secret_at is None else secret_at] = "The secret number is 42, written in the ledger."
    return " ".join(parts)


def words(text: str) -> int:
    return len(text.split())


def prompt_of(part: str) -> list[str]:
    return ["Answer from the text.", f'Text:\n"""\n{part}\n"""\n\nTask: find it']


# --- the guard alone ----------------------------------------------------------------------------

def test_a_chunk_that_fits_is_one_part_and_one_that_does_not_is_split_at_sentence_ends():
    guard = ContextGuard(window=300, count=words, exact=True, estimate=words)
    assert guard.parts("One short sentence. Another.", prompt_of, 50) == ["One short sentence. Another."]
    text = long_text(60)  # 60 sentences of 11 words
    parts = guard.parts(text, prompt_of, 50)
    # room: 300 - 64 (template) - 50 (reply) - 10 (the prompt's own words) = 176: 16 sentences a part
    assert [p.count(".") for p in parts] == [16, 16, 16, 12]
    assert all(guard.fits(prompt_of(p), 50) for p in parts)
    assert all(p.rstrip().endswith(".") for p in parts)  # cut at sentence ends only
    assert "".join(parts) == text  # nothing lost, nothing repeated, nothing changed, in order


def test_a_split_keeps_line_breaks_and_cuts_at_line_ends_too():
    table = "\n".join(f"| row {i} | harbour crane weather |" for i in range(40))  # no full stop anywhere
    text = f"Intro sentence one. Intro two.\n\n{table}\n\nThe secret number is 42."
    assert "".join(pieces(text)) == text
    guard = ContextGuard(window=300, count=words, exact=True, estimate=words)
    parts = guard.parts(text, prompt_of, 50)
    assert len(parts) > 1 and "".join(parts) == text  # the table's rows and blank lines are as they were
    assert all(guard.fits(prompt_of(p), 50) for p in parts)
    # a quote the model copies across a line break is still the chunk's own text
    assert any("| row 39 | harbour crane weather |\n\nThe secret number is 42." in p for p in parts)


def test_a_chunk_that_cannot_be_split_to_fit_is_refused_with_the_reason():
    guard = ContextGuard(window=300, count=words, exact=True, estimate=words)
    one_sentence = " ".join(["word"] * 400) + "."
    with pytest.raises(ContextOverflow, match=r"one of its sentences alone is about 400 tokens"):
        guard.parts(one_sentence, prompt_of, 50)
    with pytest.raises(ContextOverflow, match="leaves no room for a chunk"):
        ContextGuard(window=300, count=words, exact=True, estimate=words).parts(long_text(60), prompt_of, 240)
    with pytest.raises(ContextOverflow, match=r"needs about \d+ tokens .* holds 300; it is not sent cut: use minions"):
        guard.require_fit(prompt_of(long_text(60)), 50, "the turn", "use minions")
    guard.require_fit(prompt_of("Short."), 50, "the turn", "use minions")  # fits: no error


def test_ctx_in_a_spec_states_the_window():
    spec = ModelSpec.parse("gpt-4o-mini@http://127.0.0.1:9/v1;ctx=2048")
    assert spec.context_window == 2048 and spec.context_known
    assert not ModelSpec.parse("gpt-4o-mini@http://127.0.0.1:9/v1").context_known
    assert ModelSpec.parse("embedded").window_known  # minionflow starts it with its window
    for bad in ("ctx=lots", "ctx=512", "ctx=-5"):
        with pytest.raises(ModelSpecError, match="ctx must be a number of tokens above 512"):
            ModelSpec.parse(f"m@http://127.0.0.1:9/v1;{bad}")


@pytest.mark.parametrize("flavour", ["ollama", "llama.cpp"])
def test_the_window_comes_from_the_server_where_it_says_else_the_spec(flavour):
    with OpenAIServer(default_local, context=(flavour, 1500)) as server:
        url = server.start()
        guard = find_guard(ModelSpec.parse(f"qwen3:0.6b@{url}"), url)
        assert guard is not None and guard.window == 1500 and not guard.exact  # counted by estimate
        stated = find_guard(ModelSpec.parse(f"qwen3:0.6b@{url};ctx=4096"), url)
        assert stated is not None and stated.window == 4096  # what the user states wins
    with OpenAIServer(default_local) as silent:  # a server that does not say: no guard, no guess
        url = silent.start()
        assert find_guard(ModelSpec.parse(f"m@{url}"), url) is None


def test_an_ollama_model_without_num_ctx_is_guarded_at_ollamas_smallest_default():
    with OpenAIServer(default_local, context=("ollama-default", 2048)) as server:
        url = server.start()
        guard = find_guard(ModelSpec.parse(f"llama3.2@{url}"), url)
        assert guard is not None and guard.window == OLLAMA_DEFAULT_CTX == 2048


# --- the node: parts, merged ---------------------------------------------------------------------

def job_input(store: InMemoryStore, chunk: str, local: str) -> dict[str, Any]:
    settings = RunSettings(local=local)
    job = JobRecord(job_id="j0", round=1, attempt=1, task_id=0, chunk_id=0, task="Find the secret number",
                    advice="", chunk_ref=put_text(store, chunk), chunk_chars=len(chunk))
    ref = put_json(store, JobBatch(settings_ref=put_json(store, settings.model_dump(mode="json")), jobs=[job]))
    return {"jobs_ref": ref, "index": 0}


def test_the_node_reads_an_oversized_chunk_in_parts_and_merges_them_into_one_output():
    store = InMemoryStore()
    runtime = Runtime(store=store)
    local = PromptFake(responder=default_local)
    node = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: final_json()), local))
    update = node(job_input(store, long_text(), "gpt-4o-mini@http://127.0.0.1:9/v1;ctx=900"), runtime)
    result = get_json(store, update["job_results"][0]["ref"])
    assert result["status"] == "ok" and result["answer"] == "42" and result["parts"] == len(local.prompts) > 1
    assert "read in" in result["explanation"] and result["grounding"]["grounded"]
    # every part's prompt fit: tiktoken's count x 1.25, the template and the reply under the window
    assert all(int(count_tokens(p) * 1.25) + 1 + 64 + 256 <= 900 for p in local.prompts)
    assert sum(p.count("Sentence ") for p in local.prompts) == 149  # every sentence read once
    assert len(result["usage"]) == len(local.prompts)  # each part's call is counted


def test_the_node_fails_a_chunk_it_cannot_split_and_sends_nothing():
    store = InMemoryStore()
    local = PromptFake(responder=default_local)
    node = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: final_json()), local))
    update = node(job_input(store, "x" * 6000, "gpt-4o-mini@http://127.0.0.1:9/v1;ctx=900"), Runtime(store=store))
    result = get_json(store, update["job_results"][0]["ref"])
    assert result["status"] == "failed" and local.prompts == [] and result["usage"] == []
    assert "does not fit the local model's context" in result["error"] or "without a sentence boundary" in result["error"]


def test_parts_without_an_answer_merge_into_the_abstention_or_the_failure():
    store = InMemoryStore()
    text = long_text(150, secret_at=0).replace("The secret number is 42, written in the ledger.", "Nothing here.")
    abstains = PromptFake(responder=lambda p: worker_json(None, None, "not here"))
    node = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: final_json()), abstains))
    result = get_json(store, node(job_input(store, text, "m@http://127.0.0.1:9/v1;ctx=900"),
                                  Runtime(store=store))["job_results"][0]["ref"])
    assert result["status"] == "ok" and result["answer"] is None and result["parts"] > 1
    broken = PromptFake(responder=lambda p: "{not json" if "Sentence 140" in p else worker_json(None, None, "no"))
    node = bind(parallel_minion_map, FakeProvider(PromptFake(responder=lambda p: final_json()), broken))
    store = InMemoryStore()  # not the first store, whose job cache holds every part's abstention
    result = get_json(store, node(job_input(store, text, "m@http://127.0.0.1:9/v1;ctx=900"),
                                  Runtime(store=store))["job_results"][0]["ref"])
    # the answer may be in the part that failed: the job failed, and says which part
    assert result["status"] == "failed" and "part " in result["error"]


# --- whole runs over HTTP: no prompt the server would cut --------------------------------------------

def remote(prompt: str) -> str:
    if "Write prepare_jobs now" in prompt:
        return ONE_CHUNK_CODE
    if "Conversation with the local model" in prompt:  # Minion's supervisor asks
        return json.dumps({"decision": "request_additional_info", "answer": None, "message": "Which number is secret?"})
    return final_json("42" if "42" in prompt else "unknown")


def run_over(local_server: OpenAIServer, tmp_path, **settings: Any):  # type: ignore[no-untyped-def]
    """A run whose supervisor is on a server of its own (a hosted model's window is far
    above these prompts) and whose local model is on ``local_server``."""
    with OpenAIServer({"gpt-4o": remote}) as remote_server:
        remote_url, local_url = remote_server.start(), local_server.start()
        result = run_minions([LoadedDocument(title="ledger.txt", text=long_text(), pages=1)], QUESTION,
                             RunSettings(remote=f"gpt-4o@{remote_url};structured=json_schema",
                                         local=f"qwen3:0.6b@{local_url};structured=json_schema", sandbox="bwrap",
                                         **settings),
                             checkpoint=tmp_path)
    assert remote_server.rejected == []
    return result


def test_a_run_against_an_ollama_window_sends_no_prompt_it_would_cut(tmp_path):
    with OpenAIServer({"qwen3:0.6b": default_local}, context=("ollama", 900)) as server:
        result = run_over(server, tmp_path, max_rounds=1)
    assert result.status == "answered" and result.answer == "42", result.error
    assert server.oversized == [] and server.rejected == []
    assert len(server.requests) > 1 and result.usage is not None and result.usage.local.calls == len(server.requests)
    out = subprocess.run([CLI, "show", result.thread_id, "--data-dir", str(tmp_path)], capture_output=True, text=True,
                         env=cli_env(), timeout=120)
    assert out.returncode == 0 and "kept: 1, read in parts to fit the context: 1" in out.stdout, out.stdout


def test_without_the_window_the_server_refuses_the_prompt_the_guard_would_have_split(tmp_path):
    """Negative control: the same run, the server not saying its window (and the spec not
    stating it): the whole chunk is sent, and the server's check catches it."""
    with OpenAIServer({"qwen3:0.6b": default_local}, context=("silent", 900)) as server:
        result = run_over(server, tmp_path, max_rounds=1)
    assert len(server.oversized) >= 1 and result.answer != "42"


def test_minion_refuses_a_turn_that_would_not_fit_before_sending_it(tmp_path):
    with OpenAIServer({"qwen3:0.6b": default_local}, context=("ollama", 900)) as server:
        result = run_over(server, tmp_path, protocol="minion", max_rounds=3)
    assert result.status == "failed" and "ContextOverflow" in (result.error or "")
    assert "round 1's turn needs about" in result.error and "holds 900; it is not sent cut" in result.error
    assert server.requests == []  # the local model was sent nothing


# --- the embedded server counts exactly -----------------------------------------------------------------

@pytest.mark.embedded
def test_the_embedded_server_counts_tokens_exactly_and_a_small_window_is_read_in_parts(tmp_path):
    from minionflow.serving.models import DefaultModelProvider

    provider = DefaultModelProvider()
    client = provider.client(ModelSpec.parse("embedded;ctx=1024"), "local", 128)
    guard = client.context_guard()
    assert guard is not None and guard.window == 1024 and guard.exact
    base_url = client.chat.openai_api_base  # type: ignore[attr-defined]
    count = exact_counter(base_url)
    assert count is not None and count("The secret number is 42.") == guard.count("The secret number is 42.") > 3
    store = InMemoryStore()
    node = bind(parallel_minion_map, provider)
    update = node(job_input(store, long_text(), "embedded;ctx=1024"), Runtime(store=store))
    result = get_json(store, update["job_results"][0]["ref"])
    # every part was answered by the real server (none refused for its size): a part per call
    assert result["parts"] > 1 and len(result["usage"]) == result["parts"], result
    refused = [u["error"] for u in result["usage"] if "exceed" in (u["error"] or "") or "context" in (u["error"] or "")]
    assert refused == [], refused


@pytest.mark.parametrize("flavour", ["llama.cpp", "ollama"])
def test_a_llama_cpp_server_is_asked_to_keep_the_prompt_for_the_next_job(flavour):
    """llama-server reuses a slot's prompt prefix only with cache_prompt (older versions
    drop it by default): a local client of one asks for it; other servers get no such
    field (OpenAI's API refuses unknown arguments, as the test server does)."""
    with OpenAIServer(default_local, context=(flavour, 4096)) as server:
        url = server.start()
        provider = DefaultModelProvider()
        reply = provider.client(ModelSpec.parse(f"m@{url};structured=json_schema"), "local", 64).structured(
            JobOutput, [HumanMessage("Find the secret number in the text: the secret number is 42.")])
        assert reply.parsed is not None, reply.error
        remote = provider.client(ModelSpec.parse(f"m@{url};structured=json_schema"), "remote", 64)
        assert remote.structured(JobOutput, [HumanMessage("the secret number is 42.")]).parsed is not None
    local_body, remote_body = server.requests
    assert local_body.get("cache_prompt") is (True if flavour == "llama.cpp" else None)
    assert "cache_prompt" not in remote_body and server.rejected == []
