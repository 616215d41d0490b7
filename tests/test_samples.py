"""Samples per task (settings.samples, --samples): each job asked N times, the first at
temperature 0 and the others at sample_temperature with seeds 1, 2, ...; the job's answer is
the one most of its grounded replies give; every reply is a call in the usage, and each
is kept in the job cache under its seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import default_remote, secret_doc, worker_json
from fakes import FakeProvider, PromptFake
from langchain_core.messages import HumanMessage
from minionflow.contracts.schemas import JobOutput
from minionflow.contracts.settings import ModelSpec, RunSettings
from minionflow.graphs import RunContext
from minionflow.graphs.run import RunResult, run_minions
from minionflow.graphs.threads import show_thread
from minionflow.nodes.parallel_minion_map import vote
from minionflow.serving.models import ModelClient, Sampling
from minionflow.storage.persistence import open_persistence

QUESTION = "What is the secret number?"
CHUNK = "The harbour ledger of 1911.\n\nThe secret number is 42, as the harbour master wrote."


def secret_in(prompt: str) -> bool:
    return "secret number is 42" in prompt.split('"""')[1]


def sampler(seeds: list[int | None]):  # type: ignore[no-untyped-def]
    """The greedy reply invents a number with a quote that is not in the chunk; the sampled
    replies read the right one."""
    def reply(prompt: str, seed: int | None) -> str:
        seeds.append(seed)
        if not secret_in(prompt):
            return worker_json(None, None, "not here")
        if seed is None:
            return worker_json("7", "The ledger clearly records seven as the secret number")
        return worker_json("42", "The secret number is 42")
    return reply


def run(where: Path, thread: str, samples: int, seeds: list[int | None]) -> tuple[RunResult, PromptFake]:
    local = PromptFake(responder=lambda p: "", seeded=sampler(seeds))
    result = run_minions([secret_doc()], QUESTION,
                         RunContext(settings=RunSettings(sandbox="bwrap", chunk_tokens=40, max_chunk_chars=4000,
                                                         local="embedded;reply=json", samples=samples),
                                    models=FakeProvider(PromptFake(responder=default_remote), local)),
                         thread_id=thread, checkpoint=where)
    return result, local


def secret_job(where: Path, thread: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with open_persistence(where) as (saver, store):
        (rnd,) = show_thread(saver, store, thread).rounds
    (job,) = [r for r in rnd.results if r["answer"] and r["answer"] != "None"]
    return job, rnd.kept


def test_the_answer_most_grounded_samples_give_is_the_jobs_and_every_sample_is_a_call(tmp_path: Path):
    seeds: list[int | None] = []
    one, local = run(tmp_path, "one", 1, seeds)
    jobs = len(local.prompts)
    job, kept = secret_job(tmp_path, "one")
    assert job["answer"] == "7" and not job["grounding"]["grounded"] and kept == [] and "samples" not in job
    assert set(seeds) == {None}

    seeds.clear()
    three, local = run(tmp_path, "three", 3, seeds)
    # the greedy replies came from the job cache; the sampled ones were asked, with their seeds
    assert len(local.prompts) == 2 * jobs and sorted(seeds) == [1] * jobs + [2] * jobs
    assert three.usage is not None and three.usage.local.calls == 2 * jobs and three.usage.local.cache_hits == jobs
    job, kept = secret_job(tmp_path, "three")
    assert (job["answer"], job["samples"], job["votes"]) == ("42", 3, 2) and job["grounding"]["grounded"]
    assert "(2 of 3 samples gave this answer)" in job["explanation"]
    assert [k["answer"] for k in kept] == ["42"]
    # each sample is a call of the job in the usage, the cached one marked
    assert len(job["usage"]) == 3 and sum(bool(u.get("cache_hit")) for u in job["usage"]) == 1

    seeds.clear()
    _, again = run(tmp_path, "again", 3, seeds)  # the same samples again: every one from the cache
    assert again.prompts == [] and seeds == []


def test_a_tie_goes_to_the_earlier_reply_and_no_grounded_reply_keeps_the_first():
    settings = RunSettings()
    a = JobOutput(explanation="", citation="The secret number is 42, as the harbour master wrote.", answer="42")
    b = JobOutput(explanation="", citation="The harbour ledger of 1911.", answer="1911")
    assert vote([b, a], CHUNK, QUESTION, settings)[0].answer == "1911"
    assert vote([a, b, b], CHUNK, QUESTION, settings) == (
        b.model_copy(update={"explanation": "(2 of 3 samples gave this answer)"}), 2)
    made_up = JobOutput(explanation="", citation="The ledger clearly records seven as the number", answer="7")
    assert vote([None, made_up, a.model_copy(update={"answer": None})], CHUNK, QUESTION, settings) == (made_up, 1)
    assert vote([None, None], CHUNK, QUESTION, settings) == (None, 0)


def test_a_model_without_temperature_and_seed_cannot_sample():
    from langchain_core.language_models import FakeListChatModel

    assert "seed" not in FakeListChatModel.model_fields
    client = ModelClient(ModelSpec.parse("embedded"), FakeListChatModel(responses=["x"]))
    with pytest.raises(ValueError, match="cannot give several samples"):
        client.text([HumanMessage("hi")], sampling=Sampling(0.7, 1))
    sampled = ModelClient(ModelSpec.parse("embedded"), PromptFake(responder=lambda p: "x")).sampled(Sampling(0.7, 3))
    assert (sampled.temperature, sampled.seed) == (0.7, 3)  # type: ignore[attr-defined]
