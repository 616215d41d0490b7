"""The job cache (serving/job_cache.py): a job identical to one answered before, in any
round, run, fork or eval on the same store, is answered from the store with no new
local tokens; --no-cache asks again; failures are not kept, but a reply cut off at the token
limit is (as what it was); any change to what is sent (model, prompt, chunk, task, token
limit) is another job."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import CLI, Where, cli_env, default_local, default_remote, secret_doc, worker_json
from fakes import FakeProvider, PromptFake
from langchain_core.messages import HumanMessage, SystemMessage
from minionflow.contracts.settings import ModelSpec, RunSettings
from minionflow.graphs import RunContext
from minionflow.graphs.run import run_minions
from minionflow.graphs.threads import show_thread
from minionflow.serving.job_cache import job_key
from minionflow.storage.persistence import open_persistence

QUESTION = "What is the secret number?"


def run_twice(where: Where, local=default_local, threads=("first", "second"), local_spec: str = "embedded",  # type: ignore[no-untyped-def]
              **settings):
    results, fakes = [], []
    for thread in threads:
        fake = PromptFake(responder=local)
        results.append(run_minions([secret_doc()], QUESTION,
                                   RunContext(settings=RunSettings(chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap", local=local_spec, **settings),
                                              models=FakeProvider(PromptFake(responder=default_remote), fake)),
                                   thread_id=thread, checkpoint=where.location))
        fakes.append(fake)
    return results, fakes


def test_a_second_run_of_the_same_jobs_sends_none_of_them(where: Where):
    (first, second), (fake1, fake2) = run_twice(where)
    assert first.answer == second.answer == "42"
    assert len(fake1.prompts) == 12 and fake2.prompts == []  # every job answered from the cache
    assert first.usage.local.calls == 12 and first.usage.local.cache_hits == 0
    assert second.usage.local.calls == 0 and second.usage.local.cache_hits == 12
    assert second.usage.local.prompt_tokens == second.usage.local.completion_tokens == 0
    with open_persistence(where.location) as (saver, store):  # the cache is in this store: SQLite or PostgreSQL
        view = show_thread(saver, store, "second")
    (rnd,) = view.rounds
    assert all(u["cache_hit"] for r in rnd.results for u in r["usage"]) and [k["answer"] for k in rnd.kept] == ["42"]
    out = subprocess.run([CLI, "show", "second", *where.cli_args()], capture_output=True, text=True, env=cli_env(),
                         timeout=120)
    assert out.returncode == 0 and "answered from the job cache: 12" in out.stdout
    assert "0 + 12 cached" in out.stdout  # the usage table's local calls


def test_with_the_cache_off_every_job_is_asked_again(where: Where):
    (first, second), (fake1, fake2) = run_twice(where, job_cache=False)
    assert len(fake1.prompts) == len(fake2.prompts) == 12 and second.usage.local.cache_hits == 0
    _, (fake3,) = run_twice(where, threads=("third",))  # the cache on again: nothing was kept while it was off
    assert len(fake3.prompts) == 12


def test_a_failed_reply_is_not_kept(tmp_path):
    def flaky(prompt: str) -> str:  # a JSON reply that is not JSON: a failed job
        return "{not json" if "Paragraph 3 " in prompt else default_local(prompt)

    _, (fake1, fake2) = run_twice(Where("sqlite", tmp_path, tmp_path), local=flaky, local_spec="embedded;reply=json")
    assert len(fake1.prompts) == 12
    assert len(fake2.prompts) == 1 and "Paragraph 3 " in fake2.prompts[0]  # only the failed job is asked again


def _results(where: Where, thread: str) -> dict[int | None, dict]:  # type: ignore[type-arg]
    with open_persistence(where.location) as (saver, store):
        (rnd,) = show_thread(saver, store, thread).rounds
    return {r["chunk_id"]: r for r in rnd.results}


def test_a_reply_cut_off_at_the_token_limit_is_kept_as_what_it_was(tmp_path):
    """At temperature 0 the same request gets the same cut reply: a second run asks nothing.
    A text reply cut off still reads (the job keeps its answer); a JSON one does not (the job
    fails again, with the same error); the call is marked as cut off either way."""
    text_cut = "Explanation: it says so\nCitation: The secret number is 42\nAnswer: 42, and the paragraph goes on to"

    def cut_text(prompt: str) -> str | tuple[str, str]:
        return (text_cut, "length") if "secret number is 42" in prompt.split('"""')[1] else default_local(prompt)

    def cut_json(prompt: str) -> str | tuple[str, str]:
        return ('{"explanation": "read it", "citation": "The secr', "length") if "Paragraph 3 " in prompt \
            else default_local(prompt)

    for name, local, spec in (("text", cut_text, "embedded"), ("json", cut_json, "embedded;reply=json")):
        where = Where("sqlite", tmp_path / name, tmp_path / name)
        (first, second), (fake1, fake2) = run_twice(where, local=local, local_spec=spec)
        assert len(fake1.prompts) == 12 and fake2.prompts == [], name
        assert second.usage.local.cache_hits == 12 and second.usage.local.prompt_tokens == 0
        assert first.answer == second.answer == "42"
        before, after = _results(where, "first"), _results(where, "second")
        cut = [c for c, r in before.items() if r["usage"][0]["error"]]
        assert len(cut) == 1 and all("cut off at the token limit" in r["usage"][0]["error"] for r in
                                     (before[cut[0]], after[cut[0]])), name
        assert after[cut[0]]["usage"][0]["cache_hit"] is True
        # the same outcome from the cache as from the model
        assert [(r["status"], r["answer"], r["error"]) for _, r in sorted(after.items())] == \
            [(r["status"], r["answer"], r["error"]) for _, r in sorted(before.items())]
        status, answer = before[cut[0]]["status"], before[cut[0]]["answer"] or ""
        assert (status, answer.startswith("42")) == (("ok", True) if name == "text" else ("failed", False)), name


def test_the_key_is_everything_sent_and_the_model():
    messages = [SystemMessage("Answer."), HumanMessage('Text:\n"""\nThe secret number is 42.\n"""\n\nTask: find it')]
    spec = ModelSpec.parse("embedded")
    key = job_key(spec, 256, messages)
    assert key == job_key(ModelSpec.parse("embedded"), 256, list(messages))  # deterministic
    others = [
        job_key(spec, 128, messages),  # another token limit
        job_key(ModelSpec.parse("embedded;reply=json"), 256, messages),  # another reply format
        job_key(ModelSpec.parse("qwen3:0.6b@http://127.0.0.1:9/v1"), 256, messages),  # another model
        job_key(spec, 256, [SystemMessage("Answer briefly."), messages[1]]),  # another prompt template
        job_key(spec, 256, [messages[0], HumanMessage(str(messages[1].content).replace("42", "43"))]),  # another chunk
        job_key(ModelSpec.parse(f"embedded:{Path(__file__).parent / 'other.gguf'}"), 256, messages),  # other weights
    ]
    assert len({key, *others}) == 7
    # an API key's variable is not what the model is: the same request
    assert job_key(ModelSpec.parse("m@http://h:1/v1;key=A"), 256, messages) == job_key(
        ModelSpec.parse("m@http://h:1/v1;key=B"), 256, messages)


def test_through_the_cli_a_second_run_sends_the_local_model_nothing_unless_no_cache(openai_server, tmp_path):
    doc = tmp_path / "ledger.txt"
    doc.write_text(secret_doc().text)
    args = [CLI, "run", str(doc), "-q", QUESTION, "--remote", f"gpt-4o@{openai_server.url}", "--local", f"gpt-4o-mini@{openai_server.url}",
            "--chunk-tokens", "40", "--sandbox", "bwrap", "--json", "--quiet"]
    env = cli_env(tmp_path / "home")
    counts = []
    for extra in ([], [], ["--no-cache"]):
        before = len(openai_server.requests)
        done = subprocess.run(args + extra, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        out = json.loads(done.stdout)
        assert out["answer"] == "42"
        counts.append((sum(b["model"] == "gpt-4o-mini" for b in openai_server.requests[before:]),
                       out["usage"]["local"]["calls"], out["usage"]["local"]["cache_hits"]))
    assert counts == [(12, 12, 0), (0, 0, 12), (12, 12, 0)]


def test_a_job_answered_in_an_earlier_round_is_not_asked_again(run_fake):
    """Within one run: round 2's code asks what round 1 asked, over the same chunks."""
    from conftest import GOOD_CODE, final_json

    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        more = "Round 1 of" in prompt or "round 1 of" in prompt
        return final_json(decision="request_additional_info", feedback="check again") if more else final_json()

    done = run_fake(remote=remote, local=lambda p: worker_json(None, None, "no"), max_rounds=2)
    assert len(done.values["rounds"]) == 2, done.values.get("notes")
    assert len(done.local.prompts) == 12  # round 2's 12 identical jobs came from the cache
    hits = [u for u in done.usage if u.get("cache_hit")]
    assert len(hits) == 12 and {u["round"] for u in hits} == {2}


def test_each_job_s_messages_and_key_are_made_once(tmp_path, monkeypatch):
    """The task's read ahead of the cache (``prepare``) makes each job's messages and key;
    the job's call sends those messages and its cache entry takes that key (no second
    ``job_key``, no second ``worker_messages``). A second run finds all 12 by those keys."""
    from minionflow.nodes import parallel_minion_map as pm

    keys: list[str] = []
    built: list[int] = []
    make_key, build = pm.job_key, pm.worker_messages
    monkeypatch.setattr(pm, "job_key", lambda *a: (keys.append(make_key(*a)), keys[-1])[1])
    monkeypatch.setattr(pm, "worker_messages", lambda *a: (built.append(1), build(*a))[1])
    where = Where("sqlite", tmp_path, tmp_path)
    _, (fake1,) = run_twice(where, threads=("first",))
    assert len(fake1.prompts) == 12
    assert len(keys) == len(set(keys)) == 12 and len(built) == 12  # one each per job
    (second,), (fake2,) = run_twice(where, threads=("second",))
    assert fake2.prompts == [] and second.usage.local.cache_hits == 12 and sorted(keys[12:]) == sorted(keys[:12])
