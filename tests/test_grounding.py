"""Grounded minions: plain-text replies read into JobOutput, the grounding check, the
filter's ranking, the extractive fallback. Each called directly, then through a run
with fakes."""

from __future__ import annotations

import json

import pytest
from conftest import GOOD_CODE, final_json, secret_doc
from minionflow.contracts.state import JobResult
from minionflow.nodes.filter import filter_results
from minionflow.nodes.support.extractive import NO_EVIDENCE_ANSWER, extract, ignores_grounded
from minionflow.nodes.support.grounding import citation_score, ground, prefixes, relevance, restates, sentences, support
from minionflow.nodes.support.outputs import classify, rank
from minionflow.nodes.support.replies import parse_text_reply, says_not_found

CHUNK = (
    "Operating expenses in the Upper Midwest region were $50.8 million in fiscal 2025. "
    "The comparison excludes facilities acquired or closed during either period.\n"
    "On June 14, 2025 we closed the Duluth cold-storage facility in the Upper Midwest region after its ammonia "
    "refrigeration system failed an inspection. Dr. Okafor reviewed the decision."
)
TASK = "Which facility did Northwind close in fiscal 2025, and why?"


def ground_(answer: str, citation: str | None = None, chunk: str = CHUNK, task: str = TASK):  # type: ignore[no-untyped-def]
    return ground(answer, citation, chunk, task, min_citation_score=80, min_support=0.6)


# --- reading text replies --------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "citation", "answer"), [
    ("QUOTE: We closed the Duluth facility.\nANSWER: Duluth", "We closed the Duluth facility.", "Duluth"),
    ("**Answer:** Duluth\n**Quote:** \"We closed the Duluth facility.\"", "We closed the Duluth facility.", "Duluth"),
    ("Northwind closed the Duluth cold-storage facility.\n\nThis is because...", None,
     "Northwind closed the Duluth cold-storage facility."),
    ('{"citation": "c", "answer": "a", "explanation": "e"}', "c", "a"),  # JSON, unasked
    ("NONE", None, None),
    ("The text does not mention any facility.", None, None),
    ("QUOTE: none\nANSWER: not found", None, None),
    # a partial answer is an answer; a label needs its colon
    ("Northwind closed the Duluth facility. The text does not mention why.", None,
     "Northwind closed the Duluth facility. The text does not mention why."),
    ("Reason-based pricing was adopted in 2024.", None, "Reason-based pricing was adopted in 2024."),
    ("", None, None),
])
def test_text_replies_are_read_leniently(reply, citation, answer):
    out = parse_text_reply(reply)
    assert (out.citation, out.answer) == (citation, answer)


def test_a_rambling_reply_is_cut():
    out = parse_text_reply("word " * 400)
    assert out.answer is not None and len(out.answer) <= 610 and out.answer.endswith("...")


def test_says_not_found():
    assert says_not_found("Not mentioned.") and says_not_found(None) and says_not_found("It cannot be determined")
    assert not says_not_found("Duluth") and not says_not_found("No, it was closed in June")


# --- the grounding check ----------------------------------------------------------------------


def test_a_supported_answer_is_grounded_with_the_chunks_own_words_as_evidence():
    g = ground_("Northwind closed the Duluth cold-storage facility in the Upper Midwest region.")
    assert g.grounded and g.answer_support == pytest.approx(8 / 9, abs=1e-3)  # all but "Northwind", which the chunk does not name
    assert g.evidence is not None and g.evidence.startswith("On June 14, 2025 we closed the Duluth")


def test_words_scattered_over_the_chunk_are_not_support():
    # "closed", "facility", "Rocky Mountain" all occur, but no passage says the Rocky Mountain facility closed
    chunk = ("Operating expenses in the Rocky Mountain region were $72.5 million in fiscal 2025. Volumes rose.\n"
             "The comparison excludes facilities acquired or closed during either period.")
    g = ground_("Northwind closed the facility in the Rocky Mountain region.", chunk=chunk)
    assert not g.grounded and "does not support" in (g.reason or "")


def test_numbers_the_chunk_does_not_state_are_not_supported():
    chunk = "The Warehousing segment serves 577 customers from 40 sites and employed 2,269 people at year end."
    task = "How many people did the Warehousing segment employ?"
    assert not ground_("The Warehousing segment serves 421 customers from 37 sites and employed 509 people.", chunk=chunk,
                       task=task).grounded  # the words are all there, the figures are not
    assert ground_("It employed 2,269 people at year end.", chunk=chunk, task=task).grounded
    # one added figure of two (a year the model inferred) is tolerated
    assert ground_("The fiscal year ends on September 30, 2025.", chunk="Our fiscal year ends on September 30.",
                   task="When does the fiscal year end?").grounded


def test_an_answer_that_restates_the_task_is_not_grounded():
    g = ground_("Northwind closed the facility in fiscal 2025.")
    assert not g.grounded and g.reason == "the answer only restates the task"
    assert restates("Northwind closed a facility in 2025", TASK)
    assert not restates("Yes, it closed a facility in 2025", "Did Northwind close a facility in 2025?")


def test_an_invented_citation_is_caught_and_a_true_one_accepted():
    bad = ground_("Duluth", citation="https://northwind.example.com/closures")
    assert not bad.grounded and (bad.citation_score or 0) < 80 and "citation" in (bad.reason or "")
    good = ground_("Duluth cold-storage facility", citation="we closed the Duluth cold storage facility in the Upper Midwest")
    assert good.grounded and (good.citation_score or 0) >= 95
    assert citation_score("closed the Duluth facilty", CHUNK) > 80  # a typo is still the chunk's sentence


def test_a_true_quote_grounds_a_paraphrase_and_a_short_quote_verifies_nothing():
    chunk = "Total revenue for fiscal 2025 was $3,066.0 million, up from $2,840.2 million in fiscal 2024."
    task = "By how much did revenue grow?"
    # a capable model computes from what it quotes: the quote is the chunk's, the answer stands
    g = ground_("About 8 percent.", citation="Total revenue for fiscal 2025 was $3,066.0 million", chunk=chunk, task=task)
    assert g.grounded and g.citation_score == 100 and g.evidence is not None and "3,066.0" in g.evidence
    # "2025" aligns with almost any chunk: it is not taken as a quote, the answer is checked instead
    short = ground_("Revenue tripled to $9 billion.", citation="2025", chunk=chunk, task=task)
    assert not short.grounded and short.citation_score is None


def test_words_in_any_script_count():
    chunk = "Die Anlage in Düsseldorf wurde am 14. Juni geschlossen. 工厂在杭州关闭。"
    assert ground_("Düsseldorf", chunk=chunk, task="Welche Anlage wurde geschlossen?").grounded
    assert ground_("工厂在杭州关闭", chunk=chunk, task="哪家工厂关闭了？").grounded


def test_an_answer_is_cut_to_its_supported_clauses():
    g = ground_("Northwind closed the Duluth cold-storage facility, which is a type of heparin used in hospitals "
                "across the North Atlantic.")
    assert g.grounded and g.supported_answer == "Northwind closed the Duluth cold-storage facility"
    assert prefixes("Dr. Okafor signed it, which was late (see notes)") == [
        "Dr. Okafor signed it, which was late (see notes)", "Dr. Okafor signed it, which was late", "Dr. Okafor signed it"]


def test_sentences_keep_abbreviations_and_support_picks_one_passage():
    assert sentences("Seen by Dr. A. Smith. BP 120/80.\nNext") == ["Seen by Dr. A. Smith.", "BP 120/80.", "Next"]
    share, passage = support("ammonia refrigeration failed", CHUNK)
    assert share == 1.0 and passage is not None and "ammonia" in passage and "Operating expenses" not in passage


def test_relevance_weights_rare_question_words():
    texts = ["Northwind revenue grew in 2025.", "Northwind closed the Duluth facility in 2025.", "Northwind hired staff."]
    scores = relevance("Which facility did Northwind close?", texts)
    assert scores[1] == max(scores) and scores[1] > 0.9
    assert scores[0] < 0.3 and scores[2] < 0.3  # "Northwind" alone, in every text, counts for little


# --- the filter ------------------------------------------------------------------------------------


def result(job_id: str, answer: str | None, grounded: bool | None = True, support_: float = 0.8,
           evidence: str | None = None, status: str = "ok") -> JobResult:
    grounding = None if grounded is None else {"grounded": grounded, "answer_support": support_, "evidence": evidence,
                                               "reason": None if grounded else "the chunk does not support the answer"}
    return JobResult(job_id=job_id, round=1, attempt=1, task_id=0, chunk_id=0, task=TASK, status=status,  # type: ignore[typeddict-item]
                     answer=answer, explanation="", citation="minion's quote", error=None, usage=[], grounding=grounding)


def test_the_filter_counts_ungrounded_outputs_and_forwards_ranked_evidence():
    results = rank([
        result("j1", "the Southeast facility", grounded=False),
        result("j2", "revenue grew", evidence="Revenue grew 8 percent in the year."),
        result("j3", "the Duluth facility", evidence="We closed the Duluth facility after an inspection."),
        result("j4", None, grounded=None),
        result("j5", "x", status="failed"),
    ], TASK)
    assert [classify(r) for r in results] == ["usable", "usable", "ungrounded", "abstained", "failed"]
    kept, stats = filter_results(results, max_forwarded=10, max_chars=200)
    assert stats == {"jobs": 5, "failed": 1, "abstained": 1, "ungrounded": 1, "duplicates": 0, "kept": 2,
                     "dropped_over_cap": 0}
    assert [k["job_id"] for k in kept] == ["j3", "j2"]  # the Duluth evidence answers the question: first
    assert kept[0]["citation"] == "We closed the Duluth facility after an inspection."  # the chunk's words
    assert kept[0]["relevance"] > kept[1]["relevance"]


def test_both_filter_rules_share_one_cap():
    from minionflow.nodes.vote import vote

    results = rank([result(f"j{i}", f"answer number {i}", evidence=f"Answer number {i} is in this passage.") for i in range(5)],
                   TASK)
    kept, stats = filter_results(results, max_forwarded=2, max_chars=200)
    assert len(kept) == 2 and (stats["kept"], stats["dropped_over_cap"]) == (2, 3)
    kept, stats = filter_results(results, max_forwarded=9, max_chars=200)
    assert len(kept) == 5 and (stats["kept"], stats["dropped_over_cap"]) == (5, 0)
    # one task: the vote keeps one answer, so the cap has nothing to drop; a cap of 0 drops it
    kept, stats = vote(results, max_forwarded=2, max_chars=200)
    assert len(kept) == 1 and stats["outvoted"] == 4 and (stats["kept"], stats["dropped_over_cap"]) == (1, 0)
    assert kept[0]["explanation"].startswith("1 of 5 jobs agree.")
    kept, stats = vote(results, max_forwarded=0, max_chars=200)
    assert kept == [] and (stats["kept"], stats["dropped_over_cap"]) == (0, 1)


# --- the extractive fallback -------------------------------------------------------------------------


def test_a_supervisor_answer_that_ignores_every_grounded_output_is_detected():
    outputs = [{"answer": "the Duluth facility", "citation": "We closed the Duluth facility."}]
    assert ignores_grounded("The Freight Brokerage facility in Ohio", TASK, outputs)
    assert ignores_grounded("Northwind closed a facility in 2025", TASK, outputs)  # restates the question
    assert ignores_grounded(None, TASK, outputs)
    assert not ignores_grounded("It closed Duluth after an inspection", TASK, outputs)
    assert not ignores_grounded("The documents do not say.", TASK, outputs)  # taken at its word
    assert ignores_grounded("The Duluth facility", TASK, [])  # nothing grounded to rest on
    # a grounded output whose quote shares no word with the question is not an answer to it
    off_topic = [{"answer": "the audit committee reviewed it", "citation": "The audit committee reviewed the estimates."}]
    assert ignores_grounded("The audit committee reviewed it", TASK, off_topic)
    assert extract(TASK, off_topic).answer == NO_EVIDENCE_ANSWER


def test_extract_prefers_relevant_supported_and_agreed_answers():
    outputs = [
        {"job_id": "a", "answer": "revenue grew", "citation": "Revenue grew 8 percent in 2025.", "support": 1.0},
        {"job_id": "b", "answer": "Duluth", "citation": "We closed the Duluth facility after an inspection.", "support": 0.7},
        {"job_id": "c", "answer": "the Duluth site", "citation": "Closing Duluth cost $12.8 million.", "support": 0.7},
    ]
    chosen = extract(TASK, outputs)
    assert chosen.job_id == "b"
    assert (chosen.answer, chosen.quote) == ("Duluth", "We closed the Duluth facility after an inspection.")
    nothing = extract(TASK, [])
    assert nothing.answer == NO_EVIDENCE_ANSWER and nothing.job_id is None


# --- through a run, with fakes -------------------------------------------------------------------------


def test_text_replies_and_grounding_in_a_run(run_fake):
    def local(prompt: str) -> str:
        chunk = prompt.split('"""')[1]
        if "secret number is 42" in chunk:
            return "QUOTE: The secret number is 42\nANSWER: The secret number is 42, which is also a famous joke."
        if "Paragraph 3 talks" in chunk:
            return "The secret number is 17, found in the harbour master's safe."  # invented: not in its chunk
        return "NONE"

    run = run_fake(local=local, reply="text")
    (record,) = run.values["rounds"]
    assert (record["abstained"], record["ungrounded"], record["kept"]) == (10, 1, 1)
    kept = run.kept(1)
    assert kept[0]["answer"] == "The secret number is 42"  # cut to its supported part
    (aggregate_prompt,) = run.remote_prompts("Minion answers:")
    assert "17" not in aggregate_prompt and "1 were not supported by their text (dropped)" in aggregate_prompt
    invented = next(r for r in run.results() if r["answer"] and "17" in r["answer"])
    assert invented["grounding"]["grounded"] is False and invented["reply_format"] == "text"


def test_a_supervisor_that_ignores_the_minions_gets_the_extractive_answer(run_fake):
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        return final_json("The secret number is 7, from the harbour records.")  # nothing a minion said

    # by default (a capable supervisor may compute or paraphrase) its answer stands
    kept = run_fake(remote=remote).values["final"]
    assert kept["answer"] == "The secret number is 7, from the harbour records." and kept["fallback"] is False
    # with the check the embedded supervisor gets by default, the extractive answer replaces it
    run = run_fake(remote=remote, extractive_fallback="ignored")
    final = run.values["final"]
    assert final["fallback"] is True
    assert (final["answer"], final["quote"]) == ("42", "The secret number is 42, written in the ledger.")
    assert final["citations"][0] == "The secret number is 42, written in the ledger."
    (note,) = [n for n in run.values["notes"] if "could not aggregate" in n]
    assert "its answer ignored every grounded minion answer" in note and "job r1-j0007" in note
    assert run.values["rounds"][0]["decision"]["supervisor_answer"] == "The secret number is 7, from the harbour records."


def test_with_no_grounded_answer_the_run_says_the_documents_do_not_answer(run_fake):
    def remote(prompt: str) -> str:
        return GOOD_CODE if "Write prepare_jobs now" in prompt else final_json("It is 99.")

    run = run_fake(remote=remote, local=lambda prompt: json.dumps({"citation": None, "answer": None, "explanation": "no"}),
                   extractive_fallback="ignored")
    final = run.values["final"]
    assert final["answer"] == NO_EVIDENCE_ANSWER and final["fallback"] is True


def test_a_good_supervisor_answer_is_kept_with_the_quote_of_the_answer_it_took(run_fake):
    run = run_fake(documents=[secret_doc()])
    final = run.values["final"]
    assert final["answer"] == "42" and final["fallback"] is False
    assert final["quote"] == "The secret number is 42, written in the ledger."


def test_a_synthesised_supervisor_answer_has_no_single_quote(run_fake):
    def remote(prompt: str) -> str:
        if "Write prepare_jobs now" in prompt:
            return GOOD_CODE
        return final_json("The ledger's secret number, 42, matches the harbour records.")

    final = run_fake(remote=remote).values["final"]
    assert final["fallback"] is False and final["quote"] is None


def test_json_replies_are_grounded_by_their_quote(run_fake):
    def local(prompt: str) -> str:
        chunk = prompt.split('"""')[1]
        if "secret number is 42" in chunk:  # a paraphrase, with the chunk's own sentence as its quote
            return json.dumps({"citation": "The secret number is 42, written in the ledger.",
                               "answer": "forty-two", "explanation": "the ledger says so"})
        if "Paragraph 3 talks" in chunk:  # an invented quote
            return json.dumps({"citation": "The harbour master keeps the number 17 in a safe.", "answer": "17",
                               "explanation": "safe"})
        return json.dumps({"citation": None, "answer": "The text does not mention a secret number.", "explanation": "-"})

    run = run_fake(local=local, reply="json")
    (record,) = run.values["rounds"]
    assert (record["abstained"], record["ungrounded"], record["kept"]) == (10, 1, 1)
    (kept,) = run.kept(1)
    assert kept["answer"] == "forty-two" and kept["citation"] == "The secret number is 42, written in the ledger."
    invented = next(r for r in run.results() if r["answer"] == "17")
    assert invented["reply_format"] == "json" and "citation is not in the chunk" in invented["grounding"]["reason"]
    # the worker prompt asked for JSON (structured output), not for plain text
    assert all("Reply with JSON" in p for p in run.local.prompts)


def test_jobs_on_parallel_threads_stem_words_as_one_thread_does():
    """A Snowball stemmer keeps the word it is working on: the map node's threads each need
    their own, or one thread's word is cut by another's (an IndexError failed a job)."""
    import sys
    import threading

    import snowballstemmer
    from minionflow.nodes.support.grounding import stem

    words = [f"{root}{suffix}" for root in ("clos", "report", "harbour", "inspect", "reconcil", "measur")
             for suffix in ("ing", "ed", "ement", "ations", "ingly", "es", "ness")]
    expected = [snowballstemmer.stemmer("english").stemWord(w) for w in words]
    unwrapped = stem.__wrapped__  # past the word cache, so that every call stems
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                results.append([unwrapped(w) for w in words])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and len(results) == 1200
    assert all(r == expected for r in results)
