"""Prompt templates, kept apart from the node logic.

The remote (supervisor) prompts receive document *metadata* only, never text;
the local (minion) prompt receives one chunk.
"""

from __future__ import annotations

DECOMPOSE_SYSTEM = """\
You are the supervisor in a collaboration with small local language models ("minions").
You cannot read the documents. The minions can, one chunk at a time, and they are weak:
give each one a short, specific task about its chunk, answerable from the chunk alone.

Write Python code that defines exactly this function:

    def prepare_jobs(context: list[str], prev_job_manifests: list[JobManifest],
                     prev_job_outputs: list[JobOutput]) -> list[JobManifest]:

`context` holds the full text of each document. These are already defined (do not import them):
- chunk_by_section(doc, max_tokens=2000) -> list[str]   (splits at headings)
- chunk_by_page(doc, pages_per_chunk=1) -> list[str]    (PDF pages)
- chunk_by_paragraph(doc, max_tokens=1000) -> list[str]
- chunk_by_tokens(doc, max_tokens=1000, overlap_tokens=0) -> list[str]
- JobManifest(chunk: str, task: str, advice: str = "", chunk_id: int | None = None, task_id: int | None = None)
- JobOutput(explanation, citation, answer, task, chunk_id, task_id)  (outputs of the previous round)
The standard library is available; there is no network and no file access.

Rules:
- Use at most {tasks_per_round} distinct tasks; pair every task with every relevant chunk.
- Keep chunks near {chunk_tokens} tokens; return at most {max_jobs} jobs.
- A minion answers null when its chunk does not contain the answer; that is expected.
- Reply with one ```python code block and nothing else."""

DECOMPOSE_USER = """\
Task: {task}

Documents (metadata only):
{documents}

This is round {round} of at most {max_rounds}.
{history}{error}
Write prepare_jobs now."""

DECOMPOSE_HISTORY = """\
What earlier rounds found:
{rounds}
Your scratchpad so far:
{scratchpad}
"""

DECOMPOSE_ROUND_LINE = ("- round {round}: {jobs} jobs ({failed} failed, {abstained} abstained, {ungrounded} not supported "
                        "by their text); your feedback then: {feedback}")

DECOMPOSE_RETRY_JOBS = "{count} job(s) failed last round and will be run again automatically: {tasks}\n"

DECOMPOSE_ERROR = """\
Your previous code for this round failed (attempt {attempt} of {max_attempts}):
{error}
Fix the error and write the code again.
"""

WORKER_SYSTEM = """\
You read one part of a document and answer a task about it. Use only this text.
First copy the sentence from the text that is most relevant to the task, then answer the task from it.
If no sentence is relevant, the citation and the answer are null.
Reply with JSON: {"citation": "...", "answer": "...", "explanation": "..."}"""

# the same job for a model that replies in plain text (ModelSpec.reply == "text"), read
# by nodes.support.replies.parse_text_reply; the quote is then found in the chunk
# (nodes.support.grounding). Measured with benchmarks/worker_formats.py on the bundled suite
# (SmolLM2-135M, 1,000-token chunks): this plain wording got the answer from 25 of 91
# chunks that hold it; asking for "QUOTE: ... ANSWER: ..." lines, 15 of 74; asking for
# "one short sentence", 18 of 91. It shares WORKER_USER: labelling the task "Question:"
# there stopped the model's "The task is to find ..." replies but found 21 of 91.
WORKER_TEXT_SYSTEM = """\
Answer the question using only the text. If the text does not answer it, reply NONE."""

# The chunk comes first: jobs over one chunk share their prompt up to the task, and run
# back to back (sandboxed_execute.chunk_major), so a server's prefix cache reads it once.
WORKER_USER = """\
Text:
\"\"\"
{chunk}
\"\"\"

Task: {task}
{advice}"""

AGGREGATE_SYSTEM = """\
You are the supervisor. Small local models read chunks of documents you cannot see and
answered tasks you gave them. Their answers may be wrong, partial or contradictory.
Combine them to answer the user's question.

Reply with JSON with these keys:
- "decision": "provide_final_answer" if the answers suffice, else "request_additional_info"
- "answer": your answer to the question (best effort even when requesting more)
- "explanation": how the minions' answers support it
- "feedback": if requesting more, what is missing and which tasks to give next round
- "scratchpad": notes to keep for the next round (facts found so far)"""

AGGREGATE_USER = """\
Question: {task}

Round {round} of at most {max_rounds}. {jobs} jobs ran: {kept_count} useful answers,
{abstained} found nothing, {ungrounded} were not supported by their text (dropped), {failed} failed.
{scratchpad}
Minion answers:
{outputs}
{last_round}"""

AGGREGATE_LAST_ROUND = "This is the last round: you must choose \"provide_final_answer\"."

AGGREGATE_OUTPUT_LINE = "[{index}] task: {task}\n    answer: {answer}\n    citation: {citation}\n    explanation: {explanation}"

NO_OUTPUTS = "(no minion found an answer)"

# --- Minion: the chat protocol --------------------------------------------------

MINION_REMOTE_SYSTEM = """\
You are the supervisor. A small local model has a document that you cannot see; you must
answer the user's question about it by asking the local model questions, one per turn.
Ask short, specific questions (it is a small model); check doubtful answers by asking again.

Reply with JSON with these keys:
- "decision": "provide_final_answer" when you can answer, else "request_additional_info"
- "answer": your answer to the question (null while you are still asking)
- "message": your next question for the local model (null when you answer)"""

MINION_REMOTE_USER = """\
Question: {task}

Turn {round} of at most {max_rounds}.
Conversation with the local model so far:
{conversation}
{last_round}"""

MINION_NO_CONVERSATION = "(none yet: ask your first question)"

MINION_LAST_ROUND = "This is the last turn: you must choose \"provide_final_answer\"."

MINION_LOCAL_SYSTEM = """\
You have a document. A supervisor who cannot see it asks you questions about it.
Answer from the document only, briefly, and quote the sentence you used.
If the document does not say, answer that it does not say."""

MINION_LOCAL_USER = """\
Document:
\"\"\"
{document}
\"\"\"

Question from the supervisor: {message}"""

# --- baselines: one model reads everything ----------------------------------------

READ_ALL_SYSTEM = """\
Answer the question from the documents. Be brief and quote the sentence you used."""

READ_ALL_USER = """\
{documents}

Question: {task}"""

READ_ALL_DOCUMENT = "Document {title}:\n\"\"\"\n{text}\n\"\"\""

# --- the eval's LLM judge (evaluation/judge.py) ---------------------------------------

JUDGE_SYSTEM = """\
You grade answers to questions about documents. You are given the question, the reference
answer(s) and a candidate answer. The candidate is correct when it states the reference answer
(other wording, units or precision that round to the same value are fine) and does not
contradict it. A passage the answer rests on may complete it, but cannot replace it. When the
reference says the documents do not answer the question, the candidate is correct only if it
says so too instead of giving an answer.

Reply with JSON: {"correct": true or false, "reason": "one short sentence"}"""

JUDGE_USER = """\
Question: {question}

Reference answer(s): {reference}

Candidate answer: {answer}"""
