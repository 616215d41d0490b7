"""Tasks per round for the built-in plan: a compound question's parts, each a task over
every chunk, and the extractive answer that gives each part its best grounded answer."""

from __future__ import annotations

import re

import pytest
from conftest import final_json, worker_json
from minionflow.contracts.settings import RunSettings
from minionflow.nodes.sandboxed_execute import builtin_tasks, fallback_specs
from minionflow.nodes.support.extractive import extract
from minionflow.nodes.support.questions import question_parts
from minionflow.storage.documents import LoadedDocument

QUESTION = "Which code does the harbour crane show when it stalls, and where is the harbour ledger kept?"
CODE_PART = "Which code does the harbour crane show when it stalls?"
PLACE_PART = "Where is the harbour ledger kept?"


@pytest.mark.parametrize(("question", "parts"), [
    (QUESTION, [CODE_PART, PLACE_PART]),
    ("What did Smith and Jones find, and which method did they use?",
     ["What did Smith and Jones find?", "Which method did they use?"]),
    ("How old is the vessel; and at what port was it registered?",
     ["How old is the vessel?", "At what port was it registered?"]),
    ("What is the pump's rated flow and how often must its seals be replaced?",
     ["What is the pump's rated flow?", "How often must its seals be replaced?"]),
    # one thing asked: an "and" inside a clause, or a part that cannot stand alone
    ("What load and unload pressures is the controller set to?", []),
    ("Which facility did the company close, and why?", []),
    ("Who founded the company, and in what year?", []),
    ("Compare the first and the second quarter.", []),
    ("", []),
])
def test_a_question_is_split_at_and_before_a_question_word(question: str, parts: list[str]) -> None:
    assert question_parts(question) == parts


def test_the_built_in_plan_asks_the_question_and_its_parts_of_every_chunk() -> None:
    texts = [" ".join(f"{word}{i}" for i in range(60)) for word in ("alpha", "beta")]  # two documents, several chunks each
    three = RunSettings(tasks_per_round=3, chunk_tokens=30)
    assert builtin_tasks(QUESTION, three) == [QUESTION, CODE_PART, PLACE_PART]
    specs = fallback_specs(texts, QUESTION, three)
    n = len(fallback_specs(texts, QUESTION, RunSettings(tasks_per_round=1, chunk_tokens=30)))
    chunks = list(dict.fromkeys(s.chunk for s in specs))
    assert n >= 4 and len(chunks) == n and len(specs) == 3 * n
    # chunk-major (a chunk's tasks back to back share its prompt prefix), ids per chunk and task
    assert [(s.chunk_id, s.task_id) for s in specs] == [(c, t) for c in range(n) for t in range(3)]
    assert [s.task for s in specs[:3]] == [QUESTION, CODE_PART, PLACE_PART]
    assert [s.chunk for s in specs[:3]] == [chunks[0]] * 3
    assert builtin_tasks(QUESTION, RunSettings(tasks_per_round=2)) == [QUESTION, CODE_PART]
    one = fallback_specs(texts, QUESTION, RunSettings(tasks_per_round=1, chunk_tokens=30))
    assert [(s.chunk_id, s.task_id, s.task) for s in one] == [(c, 0, QUESTION) for c in range(n)]
    # a question that asks one thing is one task, whatever the setting
    assert builtin_tasks("Where is the harbour ledger kept?", three) == ["Where is the harbour ledger kept?"]
    # the embedded supervisor's default is one task; the general default three
    assert RunSettings(remote="embedded").tasks_per_round == 1
    assert RunSettings(remote="openai:gpt-4o").tasks_per_round == 3


def out(job: str, task: str, answer: str, citation: str, support: float = 1.0) -> dict[str, object]:
    return {"job_id": job, "task": task, "answer": answer, "citation": citation, "support": support}


def test_the_extractive_answer_gives_each_part_its_best_answer() -> None:
    outputs = [
        out("r1-j0000", QUESTION, "Code E7", "The harbour crane shows code E7 when it stalls."),
        out("r1-j0001", CODE_PART, "E7", "The harbour crane shows code E7 when it stalls."),
        out("r1-j0005", PLACE_PART, "the harbour office", "The harbour office keeps a copy of the crane manual.", 0.5),
        out("r1-j0008", PLACE_PART, "Oslo", "The harbour ledger is kept in Oslo."),
    ]
    chosen = extract(QUESTION, outputs)
    assert chosen.answer == "E7. Oslo." and chosen.parts == ["r1-j0001", "r1-j0008"]
    assert chosen.quote in (outputs[1]["citation"], outputs[3]["citation"])
    assert "r1-j0001" in chosen.explanation and "r1-j0008" in chosen.explanation and "2 parts" in chosen.explanation
    # one part answered: the best single answer, as before
    single = extract(QUESTION, outputs[:2])
    assert single.answer in ("Code E7", "E7") and "parts" not in single.explanation


DOC = LoadedDocument(title="harbour.txt", pages=1, text="\n\n".join(
    ["The harbour crane shows code E7 when it stalls." if i == 2 else
     "The harbour ledger is kept in Oslo." if i == 9 else
     f"Paragraph {i} talks about weather, tides and ships in general terms." for i in range(12)]))


def local_model(prompt: str) -> str:
    """A worker that answers one thing: the code where its chunk gives it and the task asks for a
    code (the whole question asks for one too), the place where the chunk gives it and the task
    asks only where."""
    chunk = prompt.split('"""')[1]
    task = re.search(r"Task: (.*)", prompt).group(1)  # type: ignore[union-attr]
    if "code E7" in chunk and "code" in task:
        return worker_json("E7", "The harbour crane shows code E7 when it stalls.")
    if "kept in Oslo" in chunk and task.startswith("Where"):
        return worker_json("Oslo", "The harbour ledger is kept in Oslo.")
    return worker_json(None, None, "not here")


def test_a_compound_question_answered_part_by_part_in_a_run(run_fake) -> None:
    def supervisor(prompt: str) -> str:
        return final_json("Nobody knows.")  # an answer that ignores every minion: the extractive one replaces it

    settings = {"plan": "builtin", "extractive_fallback": "ignored", "max_rounds": 1}
    run = run_fake(remote=supervisor, local=local_model, documents=[DOC], task=QUESTION, tasks_per_round=3, **settings)
    chunks = len({p.split('"""')[1] for p in run.local.prompts})
    assert len(run.local.prompts) == 3 * chunks  # each chunk asked the question and its two parts
    final = run.values["final"]
    assert final["fallback"] is True and "E7" in final["answer"] and "Oslo" in final["answer"]
    kept_tasks = {k["task"] for k in run.kept(1)}
    assert {CODE_PART, PLACE_PART} <= kept_tasks
    (note,) = [n for n in run.values["notes"] if "could not aggregate" in n]
    assert "the best-supported grounded answer of each of the question's 2 parts (jobs r1-j" in note

    # one task (the embedded supervisor's default): the worker answers the code only
    one = run_fake(remote=supervisor, local=local_model, documents=[DOC], task=QUESTION, tasks_per_round=1, **settings)
    assert len(one.local.prompts) == chunks
    assert "E7" in one.values["final"]["answer"] and "Oslo" not in one.values["final"]["answer"]
