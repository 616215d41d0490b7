"""Protocol logic with deterministic fakes (replies derived from the prompt) and the
real bubblewrap sandbox."""

from __future__ import annotations

import re

from conftest import GOOD_CODE, default_local, final_json, secret_doc, worker_json


def test_single_round_answers_with_citation(run_fake):
    run = run_fake()
    final = run.values["final"]
    assert final["answer"] == "42"
    # what the supervisor read, and what the answer cites: the chunk's own words
    assert final["citations"] == ["The secret number is 42, written in the ledger."]
    assert final["forced"] is False and final["fallback"] is False
    (record,) = run.values["rounds"]
    assert record["plan_source"] == "supervisor"
    assert record["jobs"] == len(run.local.prompts) == 12
    assert record["abstained"] == 11 and record["failed"] == 0
    assert record["kept"] == 1
    assert [k["answer"] for k in run.kept(1)] == ["42"]


def test_two_rounds_carry_feedback_and_scratchpad_into_next_decompose(run_fake):
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        if "Round 1 of" in prompt:
            return final_json("unsure", "request_additional_info",
                              feedback="FEEDBACK-ALPHA: look for the ledger", scratchpad="SCRATCH-BETA: 42 seen once")
        return final_json("42")

    run = run_fake(remote=remote)
    decompose_prompts = run.remote_prompts("Write prepare_jobs now")
    assert len(decompose_prompts) == 2
    assert "FEEDBACK-ALPHA" not in decompose_prompts[0]
    assert "FEEDBACK-ALPHA: look for the ledger" in decompose_prompts[1]
    assert "SCRATCH-BETA: 42 seen once" in decompose_prompts[1]
    assert "round 2 of at most 5" in decompose_prompts[1]
    assert [r["decision"]["decision"] for r in run.values["rounds"]] == ["request_additional_info", "provide_final_answer"]
    assert run.values["final"]["rounds"] == 2
    # the second round's code received the first round's outputs (prev_job_outputs); it asked what
    # round 1 asked, which the job cache answered
    assert len(run.local.prompts) == 12
    assert sum(bool(u.get("cache_hit")) for u in run.usage if u["role"] == "local" and u["round"] == 2) == 12


def test_code_that_fails_twice_then_works(run_fake):
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" not in prompt:
            return final_json()
        if "(attempt 2 of 3)" in prompt:
            return GOOD_CODE
        if "(attempt 1 of 3)" in prompt:
            return "```python\ndef prepare_jobs(context, a, b):\n    raise ValueError('BAD-TWO')\n```"
        return "```python\ndef prepare_jobs(context, a, b):\n    return undefined_name_BAD_ONE\n```"

    run = run_fake(remote=remote, max_code_attempts=3)
    prompts = run.remote_prompts("Write prepare_jobs now")
    assert len(prompts) == 3
    assert "NameError: name 'undefined_name_BAD_ONE' is not defined" in prompts[1]
    assert 'File "<supervisor>", line 2, in prepare_jobs' in prompts[1]
    assert "ValueError: BAD-TWO" in prompts[2]
    (record,) = run.values["rounds"]
    assert record["plan_source"] == "supervisor"
    assert len(record["code_errors"]) == 2
    assert run.values["final"]["answer"] == "42"
    assert not run.values["notes"]


def test_code_that_always_fails_uses_the_recorded_fallback_plan(run_fake):
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return "I am not sure how to write code."  # no code block at all
        return final_json()

    run = run_fake(remote=remote, max_code_attempts=2, chunk_tokens=1000)
    assert len(run.remote_prompts("Write prepare_jobs now")) == 2
    (record,) = run.values["rounds"]
    assert record["plan_source"] == "fallback"
    assert all("no Python code defining prepare_jobs" in e for e in record["code_errors"])
    assert any("used the built-in plan" in n for n in run.values["notes"])
    # the built-in plan: every chunk x the user's task
    assert all("Task: What is the secret number?" in p for p in run.local.prompts)
    assert any(e["type"] == "fallback" for e in run.events)


def test_after_code_failed_every_attempt_the_next_round_asks_for_none(run_fake):
    """plan="auto": round 1's code fails both attempts (the built-in plan); round 2 is not
    asked for code again, it runs the built-in plan and says why."""
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return "I am not sure how to write code."
        return final_json(decision="request_additional_info", feedback="more") if "round 1 of" in prompt.lower() \
            else final_json()

    run = run_fake(remote=remote, max_code_attempts=2, max_rounds=2, chunk_tokens=1000)
    assert len(run.remote_prompts("Write prepare_jobs now")) == 2  # round 1's two attempts, none in round 2
    assert [r["plan_source"] for r in run.values["rounds"]] == ["fallback", "builtin"]
    assert "round 2: the built-in plan; the supervisor was not asked for code (no code of round 1 ran: each " \
           "attempt failed or was rejected)" in run.values["notes"]
    assert [e["round"] for e in run.events if e["type"] == "plan"] == [2]
    assert run.values["final"]["answer"] == "42"


def test_with_plan_builtin_the_supervisor_only_aggregates(run_fake):
    run = run_fake(plan="builtin", chunk_tokens=1000)
    assert run.remote_prompts("Write prepare_jobs now") == [] and len(run.remote.prompts) == 1  # the aggregation
    assert [r["plan_source"] for r in run.values["rounds"]] == ["builtin"]
    assert all("Task: What is the secret number?" in p for p in run.local.prompts)
    assert run.values["final"]["answer"] == "42"


def test_sandbox_errors_reach_the_supervisor_typed(run_fake):
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" not in prompt:
            return final_json()
        if "attempt 1 of" in prompt:
            return GOOD_CODE
        return "```python\ndef prepare_jobs(context, a, b):\n    while True:\n        pass\n```"

    from minionflow.contracts.settings import SandboxLimits

    run = run_fake(remote=remote, sandbox_limits=SandboxLimits(timeout_s=1.0, cpu_seconds=5))
    assert "timeout: the code ran longer than the 1s limit" in run.remote_prompts("Write prepare_jobs now")[1]
    assert run.values["final"]["answer"] == "42"


def test_malformed_worker_output_is_a_recorded_failure(run_fake):
    doc = secret_doc()
    doc.text = doc.text.replace("Paragraph 3 talks", "MALFORMED paragraph 3 talks")

    def local(prompt: str) -> str:
        if "MALFORMED" in prompt:
            return '{"explanation": "cut off", "answ'
        if "Paragraph 5 talks" in prompt:
            return '{"answer": 7}'  # wrong schema: no explanation, answer not a string
        return default_local(prompt)

    run = run_fake(local=local, documents=[doc], reply="json")
    failed = [r for r in run.results() if r["status"] == "failed"]
    assert len(failed) == 2
    assert all("does not match the JobOutput schema" in r["error"] for r in failed)
    (record,) = run.values["rounds"]
    assert record["failed"] == 2
    assert run.values["final"]["answer"] == "42"
    failed_calls = [u for u in run.usage if u["role"] == "local" and not u["ok"]]
    assert len(failed_calls) == 2


def test_failed_jobs_are_run_again_next_round(run_fake):
    doc = secret_doc()
    doc.text = doc.text.replace("Paragraph 3 talks", "MALFORMED paragraph 3 talks")
    seen: list[str] = []

    def local(prompt: str) -> str:
        if "MALFORMED" in prompt:
            seen.append(prompt)
            return "not json" if len(seen) == 1 else worker_json(None)
        return default_local(prompt)

    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        if "Round 1 of" in prompt:
            return final_json("?", "request_additional_info", feedback="again")
        return final_json()

    # without the job cache: round 2's two identical jobs run side by side, and both are asked
    run = run_fake(remote=remote, local=local, documents=[doc], reply="json", job_cache=False)
    assert len(seen) == 3  # round 1 (failed); round 2: the new plan's job and the carried-over retry
    assert "1 job(s) failed last round and will be run again" in run.remote_prompts("Write prepare_jobs now")[1]
    assert any(r["job_id"].startswith("r2-retry-r1-") and r["status"] == "ok" for r in run.results())


def test_abstentions_and_duplicates_are_filtered_before_the_remote_sees_them(run_fake):
    def local(prompt: str) -> str:
        if "secret number is 42" in prompt:
            return worker_json("42", "The secret number is 42")
        if "Paragraph 1 talks" in prompt:
            return worker_json("None")
        if "Paragraph 2 talks" in prompt or "Paragraph 4 talks" in prompt:
            return worker_json("cranes", "cranes")
        if "Paragraph 6 talks" in prompt:
            return worker_json("")
        return worker_json(None)

    run = run_fake(local=local)
    stats = run.values["rounds"][-1]["filter_stats"]
    assert stats == {"jobs": 12, "failed": 0, "abstained": 9, "ungrounded": 0, "duplicates": 1, "kept": 2,
                     "dropped_over_cap": 0}
    (aggregate_prompt,) = run.remote_prompts("Minion answers:")
    assert aggregate_prompt.count("answer: ") == 2
    assert "answer: None" not in aggregate_prompt


def test_forwarded_outputs_are_capped(run_fake):
    def local(prompt: str) -> str:
        n = re.search(r"Paragraph (\d+)", prompt)
        return worker_json(f"paragraph {n.group(1) if n else 'x'} talks about " + "harbours " * 400)

    run = run_fake(local=local, max_forwarded_outputs=3, max_answer_chars=50)
    assert run.values["rounds"][-1]["filter_stats"]["kept"] == 3
    assert run.values["rounds"][-1]["filter_stats"]["dropped_over_cap"] == 8  # 11 grounded answers (the secret's chunk has none)
    (aggregate_prompt,) = run.remote_prompts("Minion answers:")
    assert aggregate_prompt.count("answer: paragraph") == 3
    assert "harbours harbours" in aggregate_prompt and len(aggregate_prompt) < 4000


def test_last_round_forces_a_final_answer(run_fake):
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        return final_json("maybe 42", "request_additional_info", feedback="more please")

    run = run_fake(remote=remote, max_rounds=2)
    final = run.values["final"]
    assert final["forced"] is True and final["answer"] == "maybe 42" and final["rounds"] == 2
    aggregate_prompts = run.remote_prompts("Minion answers:")
    assert "you must choose" not in aggregate_prompts[0]
    assert 'This is the last round: you must choose "provide_final_answer".' in aggregate_prompts[1]


def test_unusable_aggregate_reply_never_crashes(run_fake):
    def remote(prompt: str) -> str:
        return GOOD_CODE if "Write prepare_jobs now" in prompt else "I think it is 42 but no JSON"

    run = run_fake(remote=remote, max_rounds=1)
    final = run.values["final"]
    # the extractive answer: the grounded minion answer, with its quote
    assert final["fallback"] is True
    assert (final["answer"], final["quote"]) == ("42", "The secret number is 42, written in the ledger.")
    assert any("aggregation reply was unusable" in n for n in run.values["notes"])
    assert any("the answer is extracted from the minions" in n for n in run.values["notes"])
    assert len(run.remote_prompts("Minion answers:")) == 2  # one retry


def test_every_model_call_is_counted(run_fake):
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE if "attempt 1 of" in prompt else "no code"
        if "Round 1 of" in prompt:
            return final_json("?", "request_additional_info", feedback="more")
        return final_json()

    run = run_fake(remote=remote)
    usage = run.usage
    remote_records = [u for u in usage if u["role"] == "remote"]
    local_records = [u for u in usage if u["role"] == "local"]
    assert len(remote_records) == len(run.remote.prompts) == 6  # 2 rounds x (2 decompose + 1 aggregate)
    # round 2's jobs are round 1's: the job cache answers them, recorded as hits, not calls
    hits = [u for u in local_records if u.get("cache_hit")]
    assert len(local_records) - len(hits) == len(run.local.prompts) == 12 and len(hits) == 12
    assert all(u["round"] == 2 and u["prompt_tokens"] == u["completion_tokens"] == 0 for u in hits)
    assert {u["node"] for u in remote_records} == {"decompose", "aggregate"}
    assert sum(u["prompt_tokens"] for u in remote_records) == sum(len(p.split()) for p in run.remote.prompts)
    assert all(u["completion_tokens"] > 0 for u in usage if not u.get("cache_hit"))


SERVED = "m@http://127.0.0.1:9/v1"  # a served endpoint (the fakes answer for it)


def test_jobs_really_run_concurrently(run_fake):
    run = run_fake(local_delay=0.3, local_spec=SERVED, local_concurrency=4)
    assert 2 <= run.local.max_in_flight <= 4
    assert 2 <= run_fake(local_delay=0.3, local_spec="embedded;slots=3", local_concurrency=1).local.max_in_flight <= 3


def test_concurrency_bound_is_respected(run_fake):
    """local_concurrency bounds a served endpoint; an embedded server takes one request
    at a time unless its spec says otherwise."""
    assert run_fake(local_delay=0.1, local_spec=SERVED, local_concurrency=1).local.max_in_flight == 1
    assert run_fake(local_delay=0.1, local_concurrency=8).local.max_in_flight == 1


def test_remote_never_receives_document_text_except_minion_quotes(run_fake):
    """Invariant 1: every sentence carries a marker; the remote may only see the
    markers that a minion quoted."""
    sentences = [f"Sentence MARK{i:03d} describes pier {i} and its cargo cranes." for i in range(60)]
    sentences[41] = "Sentence MARK041 says the secret number is 42."
    doc = secret_doc()
    doc.text = "\n\n".join(" ".join(sentences[i:i + 3]) for i in range(0, 60, 3))
    doc.title = "harbour.txt"

    def local(prompt: str) -> str:
        if "secret number is 42" in prompt:
            return worker_json("42", "Sentence MARK041 says the secret number is 42.")
        return worker_json(None)

    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        if "Round 1 of" in prompt:
            return final_json("?", "request_additional_info", feedback="check again")
        return final_json()

    run = run_fake(remote=remote, local=local, documents=[doc])
    assert len(run.remote.prompts) == 4
    for prompt in run.remote.prompts:
        assert set(re.findall(r"MARK\d{3}", prompt)) <= {"MARK041"}
        assert "cargo cranes" not in prompt
    assert any("MARK041" in p for p in run.remote.prompts)  # the quote did reach it
    assert sum("MARK" in p for p in run.local.prompts) == len(run.local.prompts)


def test_transport_errors_are_retried_by_the_retry_policy(run_fake):
    import threading

    import httpx
    import openai

    failures: dict[str, int] = {}
    lock = threading.Lock()

    def local(prompt: str) -> str:
        if "Paragraph 2 talks" in prompt:
            with lock:  # keyed by the prompt, not by call order
                failures[prompt] = failures.get(prompt, 0) + 1
                first = failures[prompt] == 1
            if first:
                raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
        return default_local(prompt)

    run = run_fake(local=local)
    assert list(failures.values()) == [2]  # failed once, retried once
    assert run.values["rounds"][0]["failed"] == 0
    assert run.values["final"]["answer"] == "42"


def test_progress_events_carry_every_token(run_fake):
    run = run_fake()
    for role in ("remote", "local"):
        streamed = sum(e["tokens"] for e in run.events if e["type"] == "usage" and e["role"] == role)
        if role == "local":  # a job's event carries its local tokens
            streamed += sum(e["tokens"] for e in run.events if e["type"] == "job")
        counted = sum(u["prompt_tokens"] + u["completion_tokens"] for u in run.usage if u["role"] == role)
        assert streamed == counted > 0
    assert [e["type"] for e in run.events].count("job") == 12


def test_local_calls_skip_invoke_only_where_no_callback_handler_listens(run_fake, monkeypatch):
    """The map node calls the local model past LangChain's ``invoke`` when nothing
    listens (``serving.models.unheard_here``): a run streamed as the CLI streams it
    ("custom") sends no job through ``invoke``. With ``stream_mode="messages"`` (Studio's
    token view) LangGraph's handler listens: every job goes through ``invoke`` and its
    reply reaches the stream, tagged with the node."""
    from fakes import PromptFake

    invoked: list[PromptFake] = []
    original = PromptFake.invoke

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        invoked.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PromptFake, "invoke", counting)
    for stream_messages in (False, True):
        invoked.clear()
        run = run_fake(stream_messages=stream_messages)
        assert run.values["final"]["answer"] == "42"
        jobs = len(run.local.prompts)
        assert jobs == 12
        local_invoked = sum(1 for model in invoked if model is run.local)
        streamed = [message for message, meta in run.messages if meta.get("langgraph_node") == "parallel_minion_map"]
        if not stream_messages:
            assert local_invoked == 0 and streamed == []
        else:
            assert local_invoked == jobs and len(streamed) == jobs
            assert sorted(str(message.content) for message in streamed) == sorted(
                default_local(prompt) for prompt in run.local.prompts)
