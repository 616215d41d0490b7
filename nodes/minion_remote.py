"""minion_remote (remote): the supervisor's turn in the Minion chat. It reads the
question and the conversation so far (never the document) and either asks the
local model one more question or answers. The first turn always asks; the last
turn forces an answer; an unusable reply never crashes the run."""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END
from langgraph.runtime import Runtime
from minionflow.contracts.events import emit
from minionflow.contracts.schemas import MinionTurn
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import ChatTurn, FinalAnswer, MinionState
from minionflow.nodes.support import prompts
from minionflow.nodes.support.budget import budget, estimate
from minionflow.nodes.support.context import RunContext, context_of, store_of
from minionflow.nodes.support.redaction import restore_final
from minionflow.serving.accounting import record_calls

log = logging.getLogger(__name__)

# asked when the supervisor's reply was unusable and turns are left
FALLBACK_QUESTION = "What does the document say that helps answer this question: {task}"


def conversation_block(conversation: list[ChatTurn]) -> str:
    if not conversation:
        return prompts.MINION_NO_CONVERSATION
    who = {"remote": "You", "local": "Local model"}
    return "\n".join(f"{who[t['role']]}: {t['content']}" for t in conversation)


def minion_remote_messages(state: MinionState, settings: RunSettings, last: bool) -> list[Any]:
    user = prompts.MINION_REMOTE_USER.format(
        task=state["task"], round=state["round"], max_rounds=settings.max_rounds,
        conversation=conversation_block(state.get("conversation") or []),
        last_round=prompts.MINION_LAST_ROUND if last else "",
    )
    return [SystemMessage(prompts.MINION_REMOTE_SYSTEM), HumanMessage(user)]


def _last_local(state: MinionState) -> str:
    answers = [t["content"] for t in state.get("conversation") or [] if t["role"] == "local"]
    return answers[-1] if answers else ""  # no answer: empty, never a text a matcher could read


def minion_remote(state: MinionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The supervisor's turn in the Minion chat: a question for the local model, or the answer."""
    context = context_of(runtime, state)
    settings = context.run_settings
    round_ = state["round"]
    last = round_ >= settings.max_rounds
    client = context.model_provider.client(settings.remote, "remote", settings.remote_max_tokens)
    messages = minion_remote_messages(state, settings, last)
    notes: list[str] = []
    limit = budget(settings, state.get("usage") or [])
    if limit is not None:
        need = estimate(messages, settings, MinionTurn)
        # this turn is the last one the budget affords (a first turn asks anyway: an answer needs a reply to read)
        if not last and state.get("conversation") and limit.affords(need) and not limit.affords(need + need):
            last = True
            messages = minion_remote_messages(state, settings, last)
            notes.append(f"turn {round_}: the remote budget does not afford another turn "
                         f"({limit.describe(need + need)}); final answer forced")
            need = estimate(messages, settings, MinionTurn)  # the last turn's prompt is longer
        if not limit.affords(need):  # no call: the last local reply is the answer
            notes.append(f"turn {round_}: the remote budget does not afford another turn ({limit.describe(need)})")
            return {"notes": notes, "decision": {"decision": "provide_final_answer", "answer": _last_local(state)},
                    "final": restore_final(FinalAnswer(
                        answer=_last_local(state), explanation="the local model's last reply (the remote budget "
                        "is spent)", citations=[], rounds=round_ - 1, forced=True, fallback=True),
                        state.get("redactions") or {})}
    reply = client.structured(MinionTurn, messages)
    # the local model's replies are what it read in the document (the egress ledger)
    said = [t["content"] for t in state.get("conversation") or [] if t["role"] == "local"]
    update: dict[str, Any] = {"usage": record_calls(store_of(runtime), reply.calls, "remote", "minion_remote", round_,
                                                    client.name, from_documents=said)}
    turn = reply.parsed if isinstance(reply.parsed, MinionTurn) else None
    if turn is None:
        log.warning("turn %s: the supervisor's reply was unusable (%s)", round_, reply.error)
        notes.append(f"turn {round_}: the supervisor's reply was unusable ({reply.error})")
    answering = turn is not None and turn.decision == "provide_final_answer" and bool(turn.answer)
    if answering and not state.get("conversation"):
        # the protocol starts with a question: an answer before the local model has said
        # anything can only be a guess
        answering = False
        notes.append(f"turn {round_}: the supervisor answered before asking anything; the local model was asked instead")
    if last or answering:
        forced = not answering
        answer = turn.answer if turn is not None and turn.answer else _last_local(state)
        if forced:
            notes.append(f"turn {round_}: last turn, final answer forced")
        update["final"] = restore_final(FinalAnswer(
            answer=answer, explanation="from the conversation with the local model", citations=[], rounds=round_,
            forced=forced, fallback=turn is None), state.get("redactions") or {})
        update["decision"] = {"decision": "provide_final_answer", "answer": answer}
    else:
        message = turn.message if turn is not None and turn.message else FALLBACK_QUESTION.format(task=state["task"])
        update["conversation"] = [ChatTurn(round=round_, role="remote", content=message)]
        update["decision"] = {"decision": "request_additional_info", "message": message}
    update["notes"] = notes
    emit({"type": "minion_remote", "round": round_, "decision": update["decision"]["decision"]})
    return update


def route_after_remote(state: MinionState) -> str:
    return END if state.get("final") else "minion_local"
