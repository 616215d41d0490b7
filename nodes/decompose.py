"""decompose (remote): the supervisor writes ``prepare_jobs`` from the task and the
documents' metadata, earlier rounds' feedback and scratchpad, and the error of a
failed attempt. It never sees document text (docs/architecture.md, guarantee 1)."""

from __future__ import annotations

import re
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from minionflow.contracts.events import emit
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import JobRecord, RoundState, round_number
from minionflow.nodes.support import prompts
from minionflow.nodes.support.aggregation import aggregate_messages, over_budget
from minionflow.nodes.support.budget import budget, earlier_rounds, estimate
from minionflow.nodes.support.common import carried_over
from minionflow.nodes.support.context import RunContext, context_of, store_of
from minionflow.nodes.support.redaction import Redactor
from minionflow.serving.accounting import record_calls

_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)

NO_CODE_ERROR = "the reply contains no Python code defining prepare_jobs; reply with one ```python code block"


def extract_code(reply: str) -> str | None:
    """The Python block that defines ``prepare_jobs`` (or the whole reply, if it is bare code)."""
    blocks = [b for b in _CODE_BLOCK.findall(reply) if "def prepare_jobs" in b]
    if blocks:
        return blocks[-1].strip() + "\n"
    if "def prepare_jobs" in reply and "```" not in reply:
        return reply.strip() + "\n"
    return None


def _documents_block(state: RoundState) -> str:
    lines = []
    for i, doc in enumerate(state["documents"]):
        pages = f", {doc['pages']} pages" if doc["pages"] > 1 else ""
        lines.append(f"- context[{i}]: {doc['title']!r}, {doc['chars']:,} characters (~{doc['chars'] // 4:,} tokens){pages}")
    return "\n".join(lines)


def _history_block(state: RoundState, retry: list[JobRecord], redactor: Redactor | None = None) -> str:
    rounds = state.get("rounds") or []
    if not rounds:
        return ""
    lines = [
        prompts.DECOMPOSE_ROUND_LINE.format(
            round=r["round"], jobs=r["jobs"], failed=r["failed"], abstained=r["abstained"], ungrounded=r.get("ungrounded", 0),
            feedback=(r["decision"].get("feedback") or "(none)"),
        )
        for r in rounds
    ]
    text = prompts.DECOMPOSE_HISTORY.format(rounds="\n".join(lines), scratchpad=state.get("scratchpad") or "(empty)")
    if retry:
        tasks = "; ".join(sorted({j["task"] for j in retry}))
        if redactor is not None:  # tasks the code wrote may quote the documents
            tasks = redactor.redact(tasks) or ""
        text += prompts.DECOMPOSE_RETRY_JOBS.format(count=len(retry), tasks=tasks)
    return text


def _error_block(state: RoundState, settings: RunSettings, redactor: Redactor | None = None) -> str:
    errors = state.get("code_errors") or []
    if not errors:
        return ""
    error = errors[-1] if redactor is None else redactor.redact(errors[-1])  # an error may quote a chunk
    return prompts.DECOMPOSE_ERROR.format(attempt=len(errors), max_attempts=settings.max_code_attempts, error=error)


def decompose_messages(state: RoundState, settings: RunSettings, retry: list[JobRecord] | None = None,
                       redactor: Redactor | None = None) -> list[Any]:
    """The supervisor's prompt; ``retry``: the last round's failed jobs this round runs again;
    ``redactor`` (redact="pii"): what the code produced (its error, its tasks) is redacted."""
    system = prompts.DECOMPOSE_SYSTEM.format(
        tasks_per_round=settings.tasks_per_round,
        chunk_tokens=settings.chunk_tokens,
        max_jobs=settings.max_jobs_per_round,
    )
    user = prompts.DECOMPOSE_USER.format(
        task=state["task"],
        documents=_documents_block(state),
        round=round_number(state),
        max_rounds=settings.max_rounds,
        history=_history_block(state, retry or [], redactor),
        error=_error_block(state, settings, redactor),
    )
    return [SystemMessage(system), HumanMessage(user)]


def builtin_plan_reason(state: RoundState, settings: RunSettings) -> str | None:
    """Why this round takes the built-in plan without asking the supervisor for code
    (``settings.plan``), or None when the supervisor is asked."""
    if settings.plan == "builtin":
        return ("the embedded supervisor's default, " if settings.remote.kind == "embedded" else "") + "plan=builtin"
    if settings.plan == "auto":
        failed = [r["round"] for r in state.get("rounds") or [] if r["plan_source"] == "fallback"]
        if failed:
            return f"no code of round {failed[0]} ran: each attempt failed or was rejected"
    return None


def decompose(state: RoundState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The supervisor writes this round's ``prepare_jobs`` (or, when the remote budget does
    not afford a round, the run ends with the answer extracted from earlier rounds). A
    round whose plan is the built-in one (``builtin_plan_reason``) asks nothing: it says so
    and goes on to the built-in plan."""
    context = context_of(runtime, state)
    settings = context.run_settings
    store: BaseStore = store_of(runtime)
    round_ = round_number(state)
    reason = builtin_plan_reason(state, settings)
    if reason is not None:
        limit = budget(settings, state.get("usage") or [], earlier_rounds(state.get("rounds") or []))
        need = estimate(aggregate_messages(state, settings, True), settings)
        if limit is not None and not limit.affords(need):
            return over_budget(store, state, round_, limit.describe(need))
        if round_ > 1:
            emit({"type": "round", "round": round_, "retrying": len(carried_over(store, state.get("rounds") or [], settings))})
        emit({"type": "plan", "round": round_, "source": "builtin", "reason": reason})
        return {"code": None, "plan_source": "builtin",
                "notes": [f"round {round_}: the built-in plan; the supervisor was not asked for code ({reason})"]}
    attempt = len(state.get("code_errors") or []) + 1
    retry = carried_over(store, state.get("rounds") or [], settings)
    if attempt == 1 and round_ > 1:
        emit({"type": "round", "round": round_, "retrying": len(retry)})
    emit({"type": "decompose", "round": round_, "attempt": attempt})
    redactor = Redactor(state.get("redactions") or {}) if settings.redact == "pii" else None
    messages = decompose_messages(state, settings, retry, redactor)
    limit = budget(settings, state.get("usage") or [], earlier_rounds(state.get("rounds") or []))
    if limit is not None:
        # a round needs this call and an aggregation at least as long as its prompt without outputs
        need = estimate(messages, settings) + estimate(aggregate_messages(state, settings, True), settings)
        if not limit.affords(need):
            return over_budget(store, state, round_, limit.describe(need))
    client = context.model_provider.client(settings.remote, "remote", settings.remote_max_tokens)
    call = client.text(messages)
    update: dict[str, Any] = {"usage": record_calls(store, [call], "remote", "decompose", round_, client.name,
                                                    from_documents=[])}  # metadata only: no document text
    if redactor is not None and redactor.mapping != (state.get("redactions") or {}):
        update["redactions"] = redactor.mapping
    code = extract_code(str(call.message.content)) if call.message is not None else None
    if code is None:
        error = call.error or NO_CODE_ERROR
        update["code"] = None
        update["code_errors"] = [*(state.get("code_errors") or []), error]
    else:
        update["code"] = code
    return update
