"""minion_local (local): the local model, which holds the whole document, answers
the supervisor's latest question. Its answer is all the supervisor ever sees."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from minionflow.contracts.events import emit
from minionflow.contracts.state import ChatTurn, MinionState
from minionflow.nodes.support import prompts
from minionflow.nodes.support.common import document_texts
from minionflow.nodes.support.context import RunContext, context_of, store_of
from minionflow.nodes.support.redaction import Redactor, restore
from minionflow.serving.accounting import record_calls
from minionflow.serving.context_guard import message_texts
from minionflow.serving.models import reply_text


def document_block(titles: list[str], texts: list[str]) -> str:
    return "\n\n".join(f"[{title}]\n{text}" if len(texts) > 1 else text for title, text in zip(titles, texts, strict=True))


def minion_local(state: MinionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The local model, holding the whole document, answers the supervisor's latest question."""
    context = context_of(runtime, state)
    settings = context.run_settings
    round_ = state["round"]
    store = store_of(runtime)
    docs = state["documents"]
    texts = document_texts(store, docs)
    question = [t for t in state.get("conversation") or [] if t["role"] == "remote"][-1]["content"]
    # the supervisor may name what it saw as a placeholder: the local model reads the value
    question = restore(question, state.get("redactions") or {}) or question
    messages = [
        SystemMessage(prompts.MINION_LOCAL_SYSTEM),
        HumanMessage(prompts.MINION_LOCAL_USER.format(document=document_block([d["title"] for d in docs], texts),
                                                      message=question)),
    ]
    client = context.model_provider.client(settings.local, "local", settings.local_max_tokens)
    guard = client.context_guard()
    if guard is not None:  # the whole document every turn: never sent cut
        guard.require_fit(message_texts(messages), settings.local_max_tokens, f"round {round_}'s turn",
                          "minions (the default protocol) reads the documents in chunks")
    call = client.text(messages)
    usage = record_calls(store, [call], "local", "minion_local", round_, client.name)
    content = reply_text(call.message).strip() if call.message is not None else ""
    mapping = None
    if settings.redact == "pii":  # the reply goes to the supervisor with personal data as placeholders
        redactor = Redactor(state.get("redactions") or {})
        content, mapping = redactor.redact(content) or "", redactor.mapping
    if not content:
        content = f"(the local model gave no answer: {call.error or 'empty reply'})"
    emit({"type": "minion_local", "round": round_})
    update: dict[str, Any] = {"conversation": [ChatTurn(round=round_, role="local", content=content)],
                              "round": round_ + 1, "usage": usage}
    if mapping is not None:
        update["redactions"] = mapping
    return update
