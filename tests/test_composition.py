"""The composition examples: a BM25 retrieval pre-filter node and a majority-vote
filter, built from the nodes with minions_builder, run through run_minions (and
the CLI's --graph) with the same checkpointing, resume and accounting."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import pytest
from conftest import CLI, GOOD_CODE, SUBPROCESS_TIMEOUT, cli_env, default_local, default_remote, final_json, worker_json
from fakes import FakeProvider, PromptFake
from minionflow.graphs import RunContext, RunSettings
from minionflow.graphs.run import resume_minions, run_minions
from minionflow.graphs.threads import show_thread
from minionflow.nodes.retrieve import top_chunks
from minionflow.sandbox import BwrapBackend
from minionflow.storage.documents import LoadedDocument
from minionflow.storage.persistence import open_persistence

RETRIEVAL = "minionflow.graphs.variants:retrieval_minions"
VOTE = "minionflow.graphs.variants:majority_vote_minions"
RERANK = "minionflow.graphs.variants:reranked_minions"
QUESTION = "What is the secret number?"


# the supervisor chunks the (retrieved) document with the helper it is given
CHUNKING_CODE = GOOD_CODE.replace('doc.split("\\n\\n")', "chunk_by_tokens(doc, max_tokens=40)")


def long_doc(paragraphs_count: int = 40) -> LoadedDocument:
    """Paragraphs of about 120 characters: one 40-token chunk each."""
    paragraphs = [f"Paragraph {i:02d} covers the harbour cranes, the tides, the shipping lanes and the weather of week {i:02d}."
                  for i in range(paragraphs_count)]
    paragraphs[min(29, paragraphs_count - 1)] = "Paragraph 29: the secret number is 42, written in the ledger kept by the harbour master in week 29."
    return LoadedDocument(title="harbour.txt", text="\n\n".join(paragraphs), pages=1)


def test_bm25_ranks_the_chunk_that_matches_the_task_first():
    chunks = ["tides and weather", "the secret number is 42", "cranes", "the number of cranes", "weather again"]
    assert top_chunks("What is the secret number?", chunks, 2) == [1, 3]  # in document order
    assert top_chunks("anything", chunks[:2], 5) == [0, 1]


def test_retrieval_prefilter_sends_only_the_top_chunks_and_resumes(tmp_path):
    assert "chunk_by_tokens" in CHUNKING_CODE

    def down(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return CHUNKING_CODE
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))

    settings = RunSettings(graph=RETRIEVAL, chunk_tokens=40, max_chunk_chars=4000)
    local = PromptFake(responder=default_local)
    failed = run_minions([long_doc()], QUESTION, RunContext(settings=settings, sandbox=BwrapBackend(),
                                    models=FakeProvider(PromptFake(responder=down), local)),
                         checkpoint=tmp_path)
    assert failed.status == "failed"
    assert len(local.prompts) == 8  # the 8 best of 40 chunks, not 40
    assert sum("written in the ledger" in p for p in local.prompts) == 1  # BM25 kept the one that matters
    remote = PromptFake(responder=lambda p: CHUNKING_CODE if "Write prepare_jobs now" in p else default_remote(p))
    local2 = PromptFake(responder=default_local)
    # `run --thread` on the same question and document resumes (the original documents are kept)
    done = run_minions([long_doc()], QUESTION,
                       RunContext(settings=settings, sandbox=BwrapBackend(), models=FakeProvider(remote, local2)),
                       thread_id=failed.thread_id, checkpoint=tmp_path)
    assert done.status == "answered" and done.answer == "42"
    assert local2.prompts == [] and not any("Write prepare_jobs now" in p for p in remote.prompts)
    assert done.usage is not None and done.usage.local.calls == 8 and done.usage.remote.calls == 2
    assert any("retrieval (BM25) kept the 8 best of 40 chunks" in n for n in done.notes)
    from minionflow.serving.accounting import count_tokens

    # remote-only means sending the whole document, not the retrieved part
    assert done.usage.remote_only_prompt_tokens == count_tokens(QUESTION) + count_tokens(long_doc().text)
    with open_persistence(tmp_path) as (saver, store):
        view = show_thread(saver, store, done.thread_id)
    assert view.summary.protocol == RETRIEVAL and view.summary.jobs == 8
    assert view.documents[0]["title"] == "harbour.txt (retrieved)"
    from minionflow.contracts.errors import BadInput

    with pytest.raises(BadInput, match="already finished"):
        resume_minions(failed.thread_id, checkpoint=tmp_path,
                       context=RunContext(sandbox=BwrapBackend(), models=FakeProvider(remote, local2)))


def test_majority_vote_keeps_the_answer_most_jobs_agree_on(tmp_path):
    paragraphs = ["The secret number is 42 per the ledger.", "Harbour cranes.", "The secret number is 7, says a rumour.",
                  "Again: the secret number is 42.", "Tides.", "A note: secret number 42."]
    doc = LoadedDocument(title="votes.txt", text="\n\n".join(paragraphs), pages=1)

    def local(prompt: str) -> str:
        chunk = prompt.split('"""')[1]
        if "7" in chunk:
            return worker_json("7", "The secret number is 7")
        if "42" in chunk:
            return worker_json("42", "secret number is 42")
        return worker_json(None)

    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        return final_json("42" if "3 of 4 jobs agree" in prompt else "?")

    results = {}
    for name, graph in (("default", None), ("vote", VOTE)):
        remote_fake = PromptFake(responder=remote)
        results[name] = (run_minions([doc], QUESTION,
                                     RunContext(settings=RunSettings(graph=graph, chunk_tokens=40, max_chunk_chars=4000),
                                                sandbox=BwrapBackend(),
                                                models=FakeProvider(remote_fake, PromptFake(responder=local))),
                                     checkpoint=tmp_path / name), remote_fake)
    vote, vote_remote = results["vote"]
    assert vote.status == "answered" and vote.answer == "42"
    aggregate_prompt = [p for p in vote_remote.prompts if "Minion answers" in p][0]
    assert "answer: 7" not in aggregate_prompt  # outvoted
    default, default_remote_fake = results["default"]
    assert "answer: 7" in [p for p in default_remote_fake.prompts if "Minion answers" in p][0]
    assert vote.usage is not None and vote.usage.local.calls == 6 == default.usage.local.calls  # type: ignore[union-attr]
    with open_persistence(tmp_path / "vote") as (saver, store):
        view = show_thread(saver, store, vote.thread_id)
    assert len(view.rounds[0].kept) == 1 and view.rounds[0].kept[0]["explanation"].startswith("3 of 4 jobs agree")

    # the supervisor is down at aggregation: the run stops resumable, and the resume aggregates
    # the saved vote without running a job again
    def down(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))

    first_local = PromptFake(responder=local)
    failed = run_minions([doc], QUESTION,
                         RunContext(settings=RunSettings(graph=VOTE, chunk_tokens=40, max_chunk_chars=4000),
                                    sandbox=BwrapBackend(), models=FakeProvider(PromptFake(responder=down), first_local)),
                         checkpoint=tmp_path / "resume")
    assert failed.status == "failed" and len(first_local.prompts) == 6
    again_local = PromptFake(responder=local)
    done = resume_minions(failed.thread_id, checkpoint=tmp_path / "resume", context=RunContext(sandbox=BwrapBackend(),
                                             models=FakeProvider(PromptFake(responder=remote), again_local)))
    assert done.status == "answered" and done.answer == "42" and again_local.prompts == []
    assert done.usage is not None and done.usage.local.calls == 6


def answers_everywhere(prompt: str) -> str:
    """A minion that finds a grounded answer in every paragraph of long_doc()."""
    chunk = prompt.split('"""')[1]
    week = chunk.split("week ")[-1][:2] if "week " in chunk else "00"
    return worker_json(f"week {week}", f"the weather of week {week}")


def test_a_step_inserted_after_filter_reranks_what_the_supervisor_sees(tmp_path):
    remote = PromptFake(responder=lambda p: GOOD_CODE if "Write prepare_jobs now" in p else final_json("week 07"))
    done = run_minions([long_doc(12)], QUESTION,
                       RunContext(settings=RunSettings(graph=RERANK, chunk_tokens=40, max_chunk_chars=4000),
                                  sandbox=BwrapBackend(),
                                  models=FakeProvider(remote, PromptFake(responder=answers_everywhere))),
                       checkpoint=tmp_path)
    assert done.status == "answered" and done.usage is not None and done.usage.local.calls == 12
    aggregate_prompt = next(p for p in remote.prompts if "Minion answers" in p)
    assert aggregate_prompt.count("answer: week") == 3  # the 3 best of the 10 the filter kept
    with open_persistence(tmp_path) as (saver, store):
        view = show_thread(saver, store, done.thread_id)
    (record,) = view.rounds
    assert len(record.kept) == 3 and view.summary.protocol == RERANK
    with open_persistence(tmp_path) as (saver, _store):
        stats = saver.get_tuple({"configurable": {"thread_id": done.thread_id, "checkpoint_ns": ""}}).checkpoint[
            "channel_values"]["rounds"][0]["filter_stats"]
    assert stats["kept"] == 3 and stats["dropped_over_cap"] == stats["jobs"] - 3 - stats["abstained"] - stats["ungrounded"] \
        - stats["duplicates"] - stats["failed"]


def test_steps_go_anywhere_in_a_round_and_every_round_runs_them(bwrap):
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore
    from minionflow.contracts.errors import BadInput
    from minionflow.graphs import minions_builder
    from minionflow.graphs.run import run_config
    from minionflow.nodes.ingest import initial_state

    seen: list[tuple[str, int]] = []

    def check(state):  # after sandboxed_execute: the jobs are made, not yet sent
        seen.append(("check", state["job_count"]))
        return {"notes": [f"checked {state['job_count']} jobs"]}

    def count(state):  # after the jobs, before filter: every result is in
        seen.append(("count", len(state["job_results"])))
        return {}

    failing = "```python\ndef prepare_jobs(context, prev_job_manifests, prev_job_outputs):\n    raise ValueError('no')\n```"

    def remote(prompt: str) -> str:  # each round's first code fails; the second attempt works
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE if "failed (attempt" in prompt else failing
        return final_json("42", "request_additional_info" if "Round 1 of" in prompt else "provide_final_answer",
                          feedback="check again")

    builder = minions_builder(after={"sandboxed_execute": [("check", check)], "parallel_minion_map": [("count", count)]})
    store = InMemoryStore()
    graph = builder.compile(checkpointer=InMemorySaver(), store=store)
    settings = RunSettings(chunk_tokens=40, max_chunk_chars=4000, max_rounds=2)
    config = run_config("t", settings)
    context = RunContext(settings=settings, models=FakeProvider(PromptFake(responder=remote), PromptFake(responder=default_local)),
                         sandbox=bwrap)
    list(graph.stream(initial_state(store, [long_doc(12)], QUESTION, settings), config, context=context, durability="sync"))
    values = graph.get_state(config).values
    assert values["final"]["answer"] == "42" and len(values["rounds"]) == 2
    # the failed attempts went straight back to decompose: check ran only on made jobs
    assert seen == [("check", 12), ("count", 12), ("check", 12), ("count", 12)]
    assert [len(r["code_errors"]) for r in values["rounds"]] == [1, 1]
    assert values["notes"] == ["checked 12 jobs", "checked 12 jobs"]
    with pytest.raises(BadInput, match="cannot insert a step after aggregate"):
        minions_builder(after={"aggregate": [("late", check)]})
    with pytest.raises(BadInput, match="already has a step named 'filter'"):
        minions_builder(after={"decompose": [("filter", check)]})


@pytest.mark.embedded
def test_a_custom_graph_runs_through_the_cli_with_the_embedded_model(tmp_path):
    """`run --graph` with the embedded model (the retrieval graph: 30 s of the model). The vote
    graph runs with the embedded model in notebooks/02_custom_graph.ipynb, and with fakes in
    test_majority_vote_keeps_the_answer_most_jobs_agree_on."""
    doc = tmp_path / "harbour.txt"
    doc.write_text(long_doc(12).text)
    home = tmp_path / "home"
    out = subprocess.run([CLI, "run", str(doc), "-q", QUESTION, "--graph", RETRIEVAL, "--chunk-tokens", "40",
                          "--sandbox", "bwrap", "--json"], capture_output=True, text=True, env=cli_env(home), timeout=SUBPROCESS_TIMEOUT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["status"] == "answered"
    local_calls = [c for c in result["calls"] if c["role"] == "local"]
    # every call counted, a reply cut at the token limit included (it was generated and billed)
    assert local_calls and all(c["prompt_tokens"] > 0 for c in local_calls)
    assert len(local_calls) == 8  # the built-in plan: one job per chunk the prefilter kept
    runs = json.loads(subprocess.run([CLI, "runs", "--json"], capture_output=True, text=True, env=cli_env(home)).stdout)
    assert [r["protocol"] for r in runs] == [RETRIEVAL]
