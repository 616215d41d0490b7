"""The loss funnel (evaluation/funnel.py): for a wrong answer, the first stage its expected
answer did not reach. Each stage is made to fail in a run of its own (prompt-derived fakes,
the bwrap sandbox, a thread in SQLite), the funnel is read back from the thread, and the
same is shown by ``minionflow show --expect``, and counted by an eval's summary."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, GOOD_CODE, cli_env, default_local, final_json, secret_doc, worker_json
from fakes import FakeProvider, PromptFake
from minionflow.contracts.settings import RunSettings
from minionflow.evaluation.funnel import STAGES, expected_item, holds, thread_funnel
from minionflow.evaluation.report import funnel_counts, markdown, summarize
from minionflow.evaluation.runner import ItemResult
from minionflow.evaluation.suite import SuiteItem
from minionflow.graphs import RunContext, minions_builder
from minionflow.graphs.run import run_minions
from minionflow.graphs.threads import show_thread
from minionflow.nodes.support.outputs import empty_stats, make_filter
from minionflow.storage.persistence import open_persistence

QUESTION = "What is the secret number?"
ITEM = SuiteItem(id="q", documents=["ledger.txt"], question=QUESTION, answers=["42"])

# the supervisor's code, leaving out the paragraph that holds the number
SKIPPING_CODE = GOOD_CODE.replace("jobs.append(", 'if "secret" not in chunk: jobs.append(')


def supervisor(code: str = GOOD_CODE, answer: str = "42"):  # type: ignore[no-untyped-def]
    return lambda prompt: code if "Write prepare_jobs now" in prompt else final_json(answer=answer)


def nothing_forwarded() -> Any:
    """A graph whose filter forwards no output (as a cap of 0 would)."""
    return minions_builder(filter_node=make_filter(lambda results, cap, chars: ([], empty_stats(results))))


def run(tmp_path: Path, name: str, remote: Any, local: Any = default_local, **settings: Any) -> tuple[str, Path]:
    where = tmp_path / name
    run_minions([secret_doc()], QUESTION,
                RunContext(settings=RunSettings(sandbox="bwrap", chunk_tokens=40, max_chunk_chars=4000,
                                                local="embedded;reply=json", **settings),
                           models=FakeProvider(PromptFake(responder=remote), PromptFake(responder=local))),
                thread_id=name, checkpoint=where)
    return name, where


def funnel_of(thread: str, where: Path, item: SuiteItem = ITEM):  # type: ignore[no-untyped-def]
    with open_persistence(where) as (saver, store):
        return thread_funnel(item, show_thread(saver, store, thread), store)


CASES = {
    # stage that fails: (supervisor, worker, settings)
    "job_text": (supervisor(SKIPPING_CODE, "It is not given."), default_local, {}),
    "minion_answer": (supervisor(answer="It is not given."), lambda p: worker_json(None, None, "no"), {}),
    "grounded": (supervisor(answer="It is not given."),
                 lambda p: worker_json("42", "The ledger clearly records forty two as the number")
                 if "secret number is 42" in p else worker_json(None), {}),
    "forwarded": (supervisor(answer="It is not given."), default_local, {"graph": nothing_forwarded}),
    "final_answer": (supervisor(answer="The documents do not say."), default_local, {}),
    "matched": (supervisor(answer="The documents do not state it outright; a line reads 42."), default_local, {}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """Each case's run, made once for the tests that read it: the thread and its folder."""
    where = tmp_path_factory.mktemp("funnel")
    made = {stage: run(where, stage, remote, local, **settings) for stage, (remote, local, settings) in CASES.items()}
    made["right"] = run(where, "right", supervisor())
    return made


@pytest.mark.parametrize("stage", list(CASES))
def test_each_stage_that_loses_the_answer_is_the_one_named(runs: dict[str, tuple[str, Path]], stage: str):
    found = funnel_of(*runs[stage])
    assert found is not None and found.lost_at == stage
    index = STAGES.index(stage)
    # every stage before it held the answer, the stage itself did not
    assert [found.held[s] for s in STAGES[: index + 1]] == [True] * index + [False], found.held


def test_a_minion_that_quotes_the_answer_has_given_it(tmp_path: Path):
    """The supervisor reads a minion's quote, and the extractive answer is made of quotes: an
    answer in other words with a quote that holds the expected one reaches the minion stage."""
    def quoting(prompt: str) -> str:
        return worker_json("the figure the ledger gives", "The secret number is 42") if "secret number is 42" in prompt \
            else worker_json(None)

    found = funnel_of(*run(tmp_path, "quote", supervisor(answer="It is not given."), quoting))
    assert found is not None and found.lost_at == "final_answer"
    assert [found.held[s] for s in STAGES] == [True, True, True, True, False, False]


def test_a_right_answer_has_no_loss_and_every_stage_held_it(runs: dict[str, tuple[str, Path]]):
    found = funnel_of(*runs["right"])
    assert found is not None and found.lost_at is None and all(found.held.values())


def test_a_protocol_without_minion_jobs_starts_at_the_final_answer(tmp_path: Path):
    found = funnel_of(*run(tmp_path, "remote-only", lambda p: final_json(answer="It is 41."), protocol="remote-only"))
    assert found is not None and found.lost_at == "final_answer"
    assert [found.held[s] for s in STAGES] == [None, None, None, None, False, False]


def test_holding_reads_the_matcher_leniently():
    numeric = SuiteItem(id="n", documents=["d"], question="q", answers=["72.7 billion"], match="numeric")
    assert holds(numeric, ["revenue was $72,705 million"]) and not holds(numeric, ["revenue was $71.2 billion"])
    two = SuiteItem(id="a", documents=["d"], question="q", answers=[["Duluth"], ["14 June", "June 14"]], match="all")
    assert holds(two, ["the Duluth depot", "closed on June 14"])  # the parts in two chunks
    assert not holds(two, ["the Duluth depot"])
    exact = SuiteItem(id="e", documents=["d"], question="q", answers=["Duluth"], match="exact")
    assert holds(exact, ["It was the Duluth depot."])
    assert thread_funnel(SuiteItem(id="u", documents=["d"], question="q", answers=[], match="abstain"),
                         None, None) is None  # type: ignore[arg-type]  # unanswerable: no funnel
    assert expected_item(["1,240"]).match == "numeric" and expected_item(["Riverside"]).match == "contains"
    assert expected_item(["Duluth", "14 June"]).match == "all"


def test_the_quote_completes_an_answer_of_parts_but_is_not_one_and_a_round_without_jobs_held_nothing():
    from types import SimpleNamespace

    from minionflow.evaluation.funnel import funnel, stage_texts

    two = SuiteItem(id="a", documents=["d"], question="q", answers=[["Duluth"], ["14 June"]], match="all")
    alone = funnel(two, "It closed.", "the Duluth site closed on 14 June", None)
    assert alone is not None and alone.lost_at == "final_answer"  # the answer holds no part: aggregation lost it
    completed = funnel(two, "Duluth closed.", "the Duluth site closed on 14 June", None)
    assert completed is not None and completed.lost_at is None
    # a MinionS round that made no job (code that returned none, a prelude that kept nothing)
    texts = stage_texts(SimpleNamespace(rounds=[SimpleNamespace(jobs=[], results=[], kept=[])]), None)  # type: ignore[arg-type]
    assert texts == {"job_text": [], "minion_answer": [], "grounded": [], "forwarded": []}
    empty = funnel(ITEM, "It is 41.", None, texts)
    assert empty is not None and empty.lost_at == "job_text"


def test_show_expect_names_the_stage_and_refuses_an_empty_text(runs: dict[str, tuple[str, Path]], tmp_path: Path):
    thread, where = runs["grounded"]
    out = subprocess.run([CLI, "show", thread, "--checkpoint", str(where), "--expect", "42"], capture_output=True,
                         text=True, env=cli_env(tmp_path / "home"), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "expected answer: job text yes; minion yes; grounding no" in out.stdout
    assert "lost at grounding: a minion answered or quoted it, grounding dropped it" in out.stdout
    as_json = subprocess.run([CLI, "show", thread, "--checkpoint", str(where), "--expect", "42", "--json"],
                             capture_output=True, text=True, env=cli_env(tmp_path / "home"), timeout=120)
    assert json.loads(as_json.stdout)["funnel"]["lost_at"] == "grounded"
    empty = subprocess.run([CLI, "show", thread, "--checkpoint", str(where), "--expect", " "], capture_output=True,
                           text=True, env=cli_env(tmp_path / "home"), timeout=120)
    assert empty.returncode == 2 and empty.stderr.strip().splitlines()[-1].endswith(
        "--expect: give the answer you expected")


def test_the_summary_counts_the_answerable_questions_by_stage(runs: dict[str, tuple[str, Path]]):
    results = [ItemResult(item_id=stage, protocol="minions", status="answered", correct=False, match="contains",
                          funnel=funnel_of(*runs[stage])) for stage in CASES]
    results.append(ItemResult(item_id="r", protocol="minions", status="answered", correct=True, match="contains",
                              funnel=funnel_of(*runs["right"])))
    results.append(ItemResult(item_id="f", protocol="minions", status="failed", correct=False, match="contains"))
    results.append(ItemResult(item_id="u", protocol="minions", status="answered", correct=True, match="abstain"))
    counts = funnel_counts(results)
    assert counts == {"right": 1, **dict.fromkeys(STAGES, 1), "no answer": 1, "unknown": 0}
    table = markdown(summarize("s", 9, False, ["minions"], results))
    assert "| protocol | answerable | right | job text | minion | grounding | forwarding | final answer | matcher | " \
           "no answer |" in table
    assert "| minions | 8 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 |" in table
