"""aggregate (remote): combine the filtered minion outputs into a decision:
a final answer, or a request for another round. The last round forces a final
answer; an unusable reply never crashes the run. A final answer from a supervisor
too weak to aggregate (its reply unusable, or its answer ignoring every grounded
minion answer) is replaced by the extractive answer (``nodes.support.extractive``)."""

from __future__ import annotations

import logging
from typing import Any

from langgraph.runtime import Runtime
from minionflow.contracts.errors import is_transient
from minionflow.contracts.events import emit
from minionflow.contracts.schemas import AggregateDecision
from minionflow.contracts.state import FinalAnswer, RoundRecord, RoundState, round_number
from minionflow.nodes.support.aggregation import (
    aggregate_messages,
    citations,
    forwarded_so_far,
    most_common_answer,
    outputs_from_documents,
)
from minionflow.nodes.support.budget import budget, earlier_rounds, estimate, spent
from minionflow.nodes.support.context import RunContext, context_of, store_of
from minionflow.nodes.support.extractive import adopted_output, extract, ignores_grounded
from minionflow.nodes.support.redaction import restore_final
from minionflow.serving.accounting import record_calls
from minionflow.serving.models import CallRecord
from minionflow.storage.store import put_json

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2


def _short(text: str | None, limit: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."


def aggregate(state: RoundState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The supervisor reads the round's forwarded outputs and answers, or asks for another
    round; writes the round's record."""
    context = context_of(runtime, state)
    settings = context.run_settings
    round_ = round_number(state)
    last_round = round_ >= settings.max_rounds
    kept = state.get("kept") or []
    client = context.model_provider.client(settings.remote, "remote", settings.remote_max_tokens)
    messages = aggregate_messages(state, settings, last_round)
    notes: list[str] = []
    attempts, unaffordable = MAX_ATTEMPTS, None
    limit = budget(settings, state.get("usage") or [], earlier_rounds(state.get("rounds") or []))
    if limit is not None:
        need = estimate(messages, settings, AggregateDecision)
        this_round = spent(state.get("usage") or [], settings)  # its decompose calls so far
        if not limit.affords(need):
            attempts, unaffordable, last_round = 0, limit.describe(need), True
        elif not last_round and not limit.affords(need + this_round + need):  # no room for a round like this one
            last_round = True
            messages = aggregate_messages(state, settings, last_round)
            notes.append(f"round {round_}: the remote budget does not afford another round "
                         f"({limit.describe(need + this_round + need)}); final answer forced")
            need = estimate(messages, settings, AggregateDecision)  # the last round's prompt is longer
            if not limit.affords(need):
                attempts, unaffordable = 0, limit.describe(need)
        if not limit.affords(need + need):  # no second try at an unusable reply
            attempts = min(attempts, 1)
    calls: list[CallRecord] = []
    parsed: AggregateDecision | None = None
    error = None
    for _ in range(attempts):
        try:
            reply = client.structured(AggregateDecision, messages)
        except Exception as exc:
            if not calls or not is_transient(exc):
                raise  # nothing billed yet: the node's RetryPolicy tries again
            error = f"the endpoint failed on a second try: {type(exc).__name__}"  # keep the billed first try
            break
        calls.extend(reply.calls)
        if isinstance(reply.parsed, AggregateDecision):
            parsed, error = reply.parsed, None
            break
        error = reply.error
    forced = fallback = False
    if unaffordable is not None:
        notes.append(f"round {round_}: the remote budget does not afford the aggregation call ({unaffordable})")
        fallback = True
        parsed = AggregateDecision(decision="provide_final_answer", answer=most_common_answer(kept),
                                   explanation="The remote budget is spent.", feedback=None, scratchpad=None)
    elif parsed is None:
        fallback = True
        note = f"round {round_}: the supervisor's aggregation reply was unusable ({_short(error)})"
        log.warning(note)
        notes.append(note)
        parsed = AggregateDecision(
            decision="provide_final_answer" if last_round else "request_additional_info",
            answer=most_common_answer(kept),
            explanation="The supervisor's reply could not be parsed; this is the most common minion answer.",
            feedback=f"Your previous aggregation reply was invalid: {error}",
            scratchpad=None,
        )
    elif last_round and parsed.decision != "provide_final_answer":
        forced = True
        notes.append(f"round {round_}: last round, final answer forced")
    final = last_round or parsed.decision == "provide_final_answer"
    decision = parsed.model_dump()
    decision["decision"] = "provide_final_answer" if final else "request_additional_info"
    stats = state.get("filter_stats") or {}
    store = store_of(runtime)
    outputs = forwarded_so_far(store, state, kept)
    quote = None
    ignored = settings.extractive_fallback == "ignored" and ignores_grounded(parsed.answer, state["task"], outputs)
    if final and (fallback or ignored):
        why = ("the budget is spent" if unaffordable is not None else "its reply was unusable" if fallback
               else "its answer ignored every grounded minion answer")
        extracted = extract(state["task"], outputs)
        note = (f"round {round_}: the supervisor could not aggregate ({why}); the answer is extracted from the "
                f"minions: " + (f"the best-supported grounded answer of each of the question's {len(extracted.parts)} "
                                f"parts (jobs {', '.join(str(j) for j in extracted.parts)})" if extracted.parts
                                else f"the best-supported grounded answer (job {extracted.job_id})" if extracted.job_id
                                else "none of them found a grounded answer"))
        log.warning(note)
        notes.append(note)
        fallback, quote = True, extracted.quote
        decision["supervisor_answer"] = parsed.answer
        parsed = parsed.model_copy(update={"answer": extracted.answer, "explanation": extracted.explanation})
        decision.update(answer=extracted.answer, explanation=extracted.explanation)
    elif final and parsed.answer:
        adopted = adopted_output(parsed.answer, outputs)
        if adopted is not None:  # the supervisor took one minion's answer as it is: it carries that quote
            quote = adopted.get("citation")
    record = RoundRecord(
        round=round_, plan_source=state.get("plan_source", "fallback"), code=state.get("code"),
        code_errors=list(state.get("code_errors") or []), jobs=stats.get("jobs", 0),
        failed=stats.get("failed", 0), abstained=stats.get("abstained", 0), ungrounded=stats.get("ungrounded", 0),
        kept=len(kept), filter_stats=dict(stats), sandbox=state.get("sandbox"),
        jobs_ref=state.get("jobs_ref"), results_ref=state.get("results_ref"),
        kept_ref=put_json(store, kept), decision=decision,
    )
    usage = record_calls(store, calls, "remote", "aggregate", round_, client.name,
                         from_documents=outputs_from_documents(kept))
    cost = spent([*(state.get("usage") or []), *usage], settings)
    record["remote_tokens"], record["remote_usd"] = cost.tokens, cost.usd
    update: dict[str, Any] = {
        "scratchpad": parsed.scratchpad or state.get("scratchpad"),
        "rounds": [*(state.get("rounds") or []), record],
        "usage": usage,
        "notes": notes,
    }
    if final:
        # the user's answer with the placeholders the supervisor saw put back (redact="pii")
        update["final"] = restore_final(FinalAnswer(
            answer=parsed.answer or most_common_answer(kept), explanation=parsed.explanation,
            citations=citations(outputs, quote), rounds=round_, forced=forced, fallback=fallback, quote=quote,
        ), state.get("redactions") or {})
    emit({"type": "aggregate", "round": round_, "decision": decision["decision"]})
    return update
