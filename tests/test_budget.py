"""The remote budget (nodes.budget): a call that would cross it is not made, a call that
leaves no room for another round or turn is made the last, the notes say why, and what
the remote model was sent stays within the budget; on MinionS, Minion and remote-only."""

from __future__ import annotations

import json
import re

import pytest
from conftest import secret_doc, until_last_round
from fakes import FakeProvider, PromptFake
from minionflow.contracts.settings import RunSettings
from minionflow.graphs.run import run_minions
from pydantic import ValidationError


def remote_tokens(calls) -> int:  # type: ignore[no-untyped-def]
    return sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls if c["role"] == "remote")


wants_more = until_last_round  # it needs three rounds with max_rounds=3


def test_a_run_that_needs_three_rounds_answers_after_one_under_a_budget_for_one(run_fake):
    """Budgets from too small for a round to enough for three: each run stays within its
    budget and answers; more budget never buys fewer rounds; one budget buys exactly one
    round whose aggregation the budget made the last (the supervisor answers, and the
    notes say why)."""
    free = run_fake(remote=wants_more, max_rounds=3, remote_max_tokens=64)
    assert len(free.values["rounds"]) == 3  # it needs three without a budget
    one_round = remote_tokens([u for u in free.usage if u["round"] == 1])
    outcomes = []
    for factor in (1.0, 2.0, 2.5, 3.0, 4.0, 10.0):
        limit = int(one_round * factor)
        run = run_fake(remote=wants_more, max_rounds=3, remote_max_tokens=64, budget_tokens=limit)
        final = run.values["final"]
        assert final and final["answer"], run.values.get("notes")
        assert remote_tokens(run.usage) <= limit  # what was sent and received stays within the budget
        outcomes.append((len(run.values["rounds"]), run.values.get("notes") or [], run.remote.prompts))
    rounds = [o[0] for o in outcomes]
    assert rounds == sorted(rounds) and rounds[0] == 0 and rounds[-1] == 3, rounds
    one = [(notes, prompts) for n, notes, prompts in outcomes if n == 1]
    assert one, rounds
    notes, prompts = one[0]
    assert final_answered_by_the_supervisor(prompts)
    assert any("round 1: the remote budget does not afford another round" in n and "final answer forced" in n
               for n in notes), notes


def final_answered_by_the_supervisor(prompts: list[str]) -> bool:
    return "This is the last round" in prompts[-1]  # the aggregation call the budget made the last


def test_a_budget_that_affords_no_round_sends_nothing_and_says_so(run_fake):
    run = run_fake(budget_tokens=10)
    assert run.remote.prompts == [] and run.local.prompts == []
    assert run.values["final"]["forced"] and run.values["final"]["fallback"]
    assert any("round 1: the remote budget does not afford another round" in n for n in run.values["notes"])


def test_a_usd_budget_counts_at_the_remote_prices(run_fake):
    free = run_fake(remote=wants_more, max_rounds=3, remote_max_tokens=64)
    tokens = remote_tokens(free.usage)
    # at $10 per million tokens both ways, the whole run costs tokens * 1e-5 dollars
    prices = {"remote": {"input_per_million": 10.0, "output_per_million": 10.0}}
    run = run_fake(remote=wants_more, max_rounds=3, remote_max_tokens=64, prices=prices, budget_usd=tokens * 1e-5 / 2)
    assert len(run.values["rounds"]) < 3 and remote_tokens(run.usage) * 1e-5 <= tokens * 1e-5 / 2
    assert any("of $" in n for n in run.values["notes"])


def turn(decision: str, answer: str | None = None, message: str | None = None) -> str:
    return json.dumps({"decision": decision, "answer": answer, "message": message})


def test_minion_and_remote_only_keep_to_the_budget(tmp_path):
    def never_satisfied(prompt: str) -> str:
        return turn("request_additional_info", message="Which number does the document call secret?")

    def local(prompt: str) -> str:
        return "The secret number is 42." if re.search(r"secret number is 42", prompt) else "unknown"

    def run(protocol: str, remote, **settings):  # type: ignore[no-untyped-def]
        fakes = PromptFake(responder=remote), PromptFake(responder=local)
        result = run_minions([secret_doc()], "What is the secret number?",
                             RunSettings(protocol=protocol, remote_max_tokens=64, **settings), checkpoint=tmp_path,
                             models=FakeProvider(*fakes))
        return result, fakes[0]

    free, _ = run("minion", never_satisfied, max_rounds=6)
    per_turn = remote_tokens([c for c in free.calls if c["round"] == 2])
    limit = per_turn * 3
    capped, remote = run("minion", never_satisfied, max_rounds=6, budget_tokens=limit)
    assert capped.status == "answered" and capped.forced and capped.rounds < free.rounds
    assert remote_tokens(capped.calls) <= limit and capped.answer == "The secret number is 42."
    assert any("the remote budget does not afford another turn" in n for n in capped.notes)
    whole, remote = run("remote-only", lambda p: "42", budget_tokens=50)  # the document alone is more
    assert remote.prompts == [] and whole.answer in ("", None) and any("budget" in n for n in whole.notes)


@pytest.mark.parametrize("bad", [{"budget_tokens": 0}, {"budget_usd": -1.0}])
def test_a_budget_must_be_positive(bad):
    with pytest.raises(ValidationError, match="greater than 0"):
        RunSettings(**bad)


def test_a_resumed_run_keeps_its_budget_and_what_it_spent(tmp_path):
    """The same budget, once run straight through and once failing at round 2's first
    call and resumed: the same rounds and the same spending (what round 1 spent is read
    back from the thread, not forgotten by the resume)."""
    import httpx
    import openai
    from conftest import default_local
    from minionflow.graphs.run import resume_minions

    def run(name: str, remote, limit: int):  # type: ignore[no-untyped-def]
        settings = RunSettings(max_rounds=3, remote_max_tokens=64, budget_tokens=limit, chunk_tokens=40,
                               max_chunk_chars=4000, sandbox="bwrap")
        return run_minions([secret_doc()], "What is the secret number?", settings, checkpoint=tmp_path / name,
                           models=FakeProvider(PromptFake(responder=remote), PromptFake(responder=default_local)))

    free = run("free", wants_more, 10**9)
    assert free.rounds == 3
    one_round = remote_tokens([c for c in free.calls if c["round"] == 1])
    for factor in (2.5, 3.0, 3.5, 4.0, 5.0):  # a budget that buys two rounds of the three
        limit = int(one_round * factor)
        straight = run(f"b{factor}", wants_more, limit)
        if straight.rounds == 2:
            break
    else:
        pytest.fail("no budget of the sweep bought exactly two rounds")

    def down_in_round_two(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt and "round 1:" in prompt:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
        return wants_more(prompt)

    failed = run("resumed", down_in_round_two, limit)
    assert failed.status == "failed" and failed.rounds == 1
    done = resume_minions(failed.thread_id, checkpoint=tmp_path / "resumed",
                          models=FakeProvider(PromptFake(responder=wants_more), PromptFake(responder=default_local)))
    assert done.status == "answered" and done.rounds == straight.rounds == 2
    assert remote_tokens(done.calls) == remote_tokens(straight.calls) <= limit
