"""The remote budget (nodes.support.budget): a call that would cross it is not made, a call that
leaves no room for another round or turn is made the last, the notes say why, and what
the remote model was sent stays within the budget; on MinionS, Minion and remote-only.

The fake models here count their usage as the budget's estimate counts a prompt (tiktoken,
``serving.tokens.count_tokens``, and ``PER_MESSAGE`` a message), not in whitespace words, of
which a JSON reply or a code block has about half as many: counted in words, a budget that
reserved nothing for the reply could still look kept. Where a budget is met exactly, the
reserve for the reply (a full ``remote_max_tokens``) is what decides."""

from __future__ import annotations

import json
import re
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from conftest import GOOD_CODE, default_local, final_json, secret_doc, until_last_round
from fakes import FakeProvider, PromptFake
from langchain_core.outputs import ChatResult
from minionflow.contracts.settings import RunSettings
from minionflow.graphs import RunContext
from minionflow.graphs.run import RunResult, run_minions
from minionflow.nodes.read_all import read_all_messages
from minionflow.nodes.support.budget import PER_MESSAGE
from minionflow.serving.tokens import count_tokens
from pydantic import ValidationError

QUESTION = "What is the secret number?"


class CountedFake(PromptFake):
    """A PromptFake whose usage is what the budget estimates for its prompt (each message's
    tiktoken count plus ``PER_MESSAGE``) and its reply's tiktoken count."""

    def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        message = result.generations[0].message
        prompt = sum(count_tokens(str(m.content)) + PER_MESSAGE for m in messages)
        reply = count_tokens(str(message.content))
        message.usage_metadata = {"input_tokens": prompt, "output_tokens": reply,  # type: ignore[attr-defined]
                                  "total_tokens": prompt + reply}
        return result


_runs = count()


def run_counted(tmp_path: Path, remote: Any = until_last_round, local: Any = default_local,
                **settings: Any) -> tuple[RunResult, CountedFake]:
    """A run over the secret document with counted fakes (a checkpoint folder each); the
    result and the remote fake."""
    fakes = CountedFake(responder=remote), CountedFake(responder=local)
    settings = {"chunk_tokens": 40, "max_chunk_chars": 4000, "sandbox": "bwrap", **settings}
    result = run_minions([secret_doc()], QUESTION,
                         RunContext(settings=RunSettings(**settings), models=FakeProvider(*fakes)),
                         checkpoint=tmp_path / f"run{next(_runs)}")
    return result, fakes[0]


def remote_tokens(calls) -> int:  # type: ignore[no-untyped-def]
    return sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls if c["role"] == "remote")


wants_more = until_last_round  # it needs three rounds with max_rounds=3


def test_the_fakes_count_tokens_as_the_estimate_does(tmp_path):
    """The counted fakes report tiktoken's count: the supervisor's code is 71 tokens, not its
    27 words, and fits the reply reserve of 128 the tests here give the supervisor (a real
    server cuts a reply at ``remote_max_tokens``; a fake's longer reply would cross a budget
    the product kept)."""
    result, _ = run_counted(tmp_path, max_rounds=1, remote_max_tokens=128)
    decompose, aggregate = [c for c in result.calls if c["role"] == "remote"]
    assert decompose["completion_tokens"] == count_tokens(GOOD_CODE) == 71 and len(GOOD_CODE.split()) == 27
    assert aggregate["completion_tokens"] == count_tokens(final_json()) == 34


def test_a_run_that_needs_three_rounds_answers_after_one_under_a_budget_for_one(tmp_path):
    """Budgets from too small for a round to enough for three: each run stays within its
    budget and answers; more budget never buys fewer rounds; one budget buys exactly one
    round whose aggregation the budget made the last (the supervisor answers, and the
    notes say why)."""
    free, _ = run_counted(tmp_path, remote=wants_more, max_rounds=3, remote_max_tokens=128)
    assert free.rounds == 3  # it needs three without a budget
    one_round = remote_tokens([c for c in free.calls if c["round"] == 1])
    outcomes = []
    for factor in (1.0, 2.0, 2.5, 3.0, 4.0, 10.0):
        limit = int(one_round * factor)
        run, remote = run_counted(tmp_path, remote=wants_more, max_rounds=3, remote_max_tokens=128, budget_tokens=limit)
        assert run.status == "answered" and run.answer, run.notes
        assert remote_tokens(run.calls) <= limit  # what was sent and received stays within the budget
        outcomes.append((run.rounds, run.notes, remote.prompts))
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


def test_a_budget_that_affords_no_round_sends_nothing_and_says_so(tmp_path):
    fakes = CountedFake(responder=wants_more), CountedFake(responder=default_local)
    result = run_minions([secret_doc()], QUESTION,
                         RunContext(settings=RunSettings(budget_tokens=10, chunk_tokens=40, sandbox="bwrap"),
                                    models=FakeProvider(*fakes)),
                         checkpoint=tmp_path)
    assert fakes[0].prompts == [] and fakes[1].prompts == []
    assert result.forced and result.fallback and result.rounds == 0
    assert any("round 1: the remote budget does not afford another round" in n for n in result.notes)


def needed(notes: list[str]) -> int:
    """What a refusal's note says the next call needs ("... needs up to 1,234")."""
    found = [m for n in notes if (m := re.search(r"the next call needs up to ([\d,]+)", n))]
    assert len(found) == 1, notes
    return int(found[0].group(1).replace(",", ""))


def test_a_round_one_token_short_of_its_prompts_and_full_replies_is_not_started(tmp_path):
    """A MinionS round needs its decompose call and an aggregation, each estimated as its
    prompt plus a full reply of ``remote_max_tokens`` (the aggregation as long as its prompt
    without the minions' outputs). A budget one token short of that sends nothing; one
    exactly at it runs the round's code and jobs (the aggregation, longer with the outputs,
    is then refused, and the answer extracted from the jobs); and 64 more tokens a reply
    move the threshold by exactly 128, the two calls' replies: the budget keeps room for
    each reply at its full length."""
    needs = {}
    for max_tokens in (128, 192):
        refused, _ = run_counted(tmp_path, max_rounds=1, remote_max_tokens=max_tokens, budget_tokens=1)
        need = needs[max_tokens] = needed(refused.notes)
        short, remote = run_counted(tmp_path, max_rounds=1, remote_max_tokens=max_tokens, budget_tokens=need - 1)
        assert remote.prompts == [] and short.rounds == 0 and needed(short.notes) == need
        exact, remote = run_counted(tmp_path, max_rounds=1, remote_max_tokens=max_tokens, budget_tokens=need)
        assert exact.rounds == 1 and "Write prepare_jobs now" in remote.prompts[0], exact.notes
        assert len([c for c in exact.calls if c["role"] == "local"]) == 12 and exact.answer == "42"  # its jobs ran
        assert remote_tokens(exact.calls) <= need
    assert needs[192] - needs[128] == 2 * 64


def test_remote_only_is_refused_one_token_short_of_its_prompt_and_a_full_reply(tmp_path):
    """Remote-only's one call, counted here as the budget counts it (each message's tiktoken
    count and ``PER_MESSAGE``) plus the reply's full ``remote_max_tokens``: a budget one token
    short of that sends nothing and says what the call needs; a budget of exactly that
    sends the documents once and stays within it."""
    doc = secret_doc()
    messages = read_all_messages(QUESTION, [doc.title], [doc.text])
    prompt = sum(count_tokens(str(m.content)) + PER_MESSAGE for m in messages)
    for max_tokens in (64, 512):
        need = prompt + max_tokens
        short, remote = run_counted(tmp_path, remote=lambda p: "42", protocol="remote-only",
                                    remote_max_tokens=max_tokens, budget_tokens=need - 1)
        assert remote.prompts == [] and short.answer in ("", None), short.answer
        assert needed(short.notes) == need and "nothing was sent" in short.notes[0]
        exact, remote = run_counted(tmp_path, remote=lambda p: "42", protocol="remote-only",
                                    remote_max_tokens=max_tokens, budget_tokens=need)
        assert remote.prompts == ["\n".join(str(m.content) for m in messages)] and exact.answer == "42"
        assert remote_tokens(exact.calls) == prompt + count_tokens("42") <= need


def test_a_usd_budget_counts_at_the_remote_prices(tmp_path):
    free, _ = run_counted(tmp_path, remote=wants_more, max_rounds=3, remote_max_tokens=128)
    tokens = remote_tokens(free.calls)
    # at $10 per million tokens both ways, the whole run costs tokens * 1e-5 dollars
    prices = {"remote": {"input_per_million": 10.0, "output_per_million": 10.0}}
    run, _ = run_counted(tmp_path, remote=wants_more, max_rounds=3, remote_max_tokens=128, prices=prices,
                         budget_usd=tokens * 1e-5 / 2)
    assert run.rounds < 3 and remote_tokens(run.calls) * 1e-5 <= tokens * 1e-5 / 2
    assert any("of $" in n for n in run.notes)


def turn(decision: str, answer: str | None = None, message: str | None = None) -> str:
    return json.dumps({"decision": decision, "answer": answer, "message": message})


def test_minion_and_remote_only_keep_to_the_budget(tmp_path):
    def never_satisfied(prompt: str) -> str:
        return turn("request_additional_info", message="Which number does the document call secret?")

    def local(prompt: str) -> str:
        return "The secret number is 42." if re.search(r"secret number is 42", prompt) else "unknown"

    def run(protocol: str, remote, **settings):  # type: ignore[no-untyped-def]
        return run_counted(tmp_path, remote=remote, local=local, protocol=protocol, remote_max_tokens=64, **settings)

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
    from minionflow.graphs.run import resume_minions

    def run(name: str, remote, limit: int):  # type: ignore[no-untyped-def]
        settings = RunSettings(max_rounds=3, remote_max_tokens=128, budget_tokens=limit, chunk_tokens=40,
                               max_chunk_chars=4000, sandbox="bwrap")
        return run_minions([secret_doc()], QUESTION, RunContext(settings=settings,
                                      models=FakeProvider(CountedFake(responder=remote), CountedFake(responder=default_local))),
                           checkpoint=tmp_path / name)

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
                          context=RunContext(models=FakeProvider(CountedFake(responder=wants_more), CountedFake(responder=default_local))))
    assert done.status == "answered" and done.rounds == straight.rounds == 2
    assert remote_tokens(done.calls) == remote_tokens(straight.calls) <= limit
