"""read_all: the baselines. One model (the remote one, or the local one) reads
every document in one prompt and answers. What MinionS and Minion are compared
against: the remote-only cost is what they save."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from minionflow.contracts.state import FinalAnswer, ReadAllState
from minionflow.nodes.support import prompts
from minionflow.nodes.support.budget import budget, estimate
from minionflow.nodes.support.common import document_texts
from minionflow.nodes.support.context import RunContext, context_of, store_of
from minionflow.nodes.support.redaction import Redactor, restore_final
from minionflow.serving.accounting import record_calls
from minionflow.serving.context_guard import message_texts
from minionflow.serving.models import Role, reply_text


def read_all_messages(task: str, titles: list[str], texts: list[str]) -> list[Any]:
    documents = "\n\n".join(prompts.READ_ALL_DOCUMENT.format(title=t, text=x) for t, x in zip(titles, texts, strict=True))
    return [SystemMessage(prompts.READ_ALL_SYSTEM), HumanMessage(prompts.READ_ALL_USER.format(documents=documents, task=task))]


def _read_all(role: Role) -> Callable[[ReadAllState, Runtime[RunContext]], dict[str, Any]]:
    def read_all(state: ReadAllState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        context = context_of(runtime, state)
        settings = context.run_settings
        spec = settings.remote if role == "remote" else settings.local
        max_tokens = settings.remote_max_tokens if role == "remote" else settings.local_max_tokens
        client = context.model_provider.client(spec, role, max_tokens)
        store = store_of(runtime)
        docs = state["documents"]
        texts = document_texts(store, docs)
        messages = read_all_messages(state["task"], [d["title"] for d in docs], texts)
        limit = budget(settings, []) if role == "remote" else None
        redactor = Redactor() if role == "remote" and settings.redact == "pii" else None
        for step in ("as given", "redacted"):
            if limit is not None and not limit.affords(need := estimate(messages, settings)):
                return {"notes": [f"the remote budget does not afford reading every document ({limit.describe(need)}):"
                                  " nothing was sent"],
                        "final": FinalAnswer(answer="", explanation="the remote budget does not afford the call",
                                             citations=[], rounds=1, forced=True, fallback=True)}
            if step == "as given" and redactor is not None:  # the documents leave with personal data as placeholders
                texts = [redactor.redact(text) or "" for text in texts]
                messages = read_all_messages(state["task"], [d["title"] for d in docs], texts)
            elif step == "as given":
                break
        guard = client.context_guard() if role == "local" else None
        if guard is not None:
            guard.require_fit(message_texts(messages), max_tokens, "reading every document in one prompt",
                              "minions (the default protocol) reads them in chunks")
        call = client.text(messages)
        usage = record_calls(store, [call], role, f"read_all_{role}", 1, client.name,
                             from_documents=texts if role == "remote" else None)  # the egress ledger: everything
        answer = reply_text(call.message).strip() if call.message is not None else ""
        notes = [] if answer else [f"the {role} model gave no answer: {call.error or 'empty reply'}"]
        mapping = redactor.mapping if redactor is not None else {}
        update: dict[str, Any] = {
            "usage": usage, "notes": notes,
            # no answer is an empty answer (shown as "(no answer)"), never a text a matcher could read
            "final": restore_final(FinalAnswer(answer=answer, explanation=f"the {role} model read everything",
                                               citations=[], rounds=1, forced=False, fallback=not answer), mapping)}
        if redactor is not None:
            update["redactions"] = mapping
        return update

    return read_all


read_all_remote = _read_all("remote")
read_all_remote.__doc__ = "remote-only: the remote model reads every document in one prompt and answers."
read_all_local = _read_all("local")
read_all_local.__doc__ = "local-only: the local model reads every document in one prompt and answers."
