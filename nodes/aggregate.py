"""aggregate (remote): combine the filtered minion outputs into a decision:
a final answer, or a request for another round. The last round forces a final
answer; an unusable reply never crashes the run. A final answer from a supervisor
too weak to aggregate (its reply unusable, or its answer ignoring every grounded
minion answer) is replaced by the extractive answer (``nodes.extractive``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from minionflow.contracts.errors import is_transient
from minionflow.contracts.schemas import AggregateDecision
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import FinalAnswer, RoundRecord, RoundState, round_number

from . import prompts
from .accounting import record_calls
from .budget import budget, earlier_rounds, estimate, spent
from .common import emit, settings_of, store_of
from .extractive import adopted_output, extract, ignores_grounded
from .models import CallRecord, ModelProvider
from .redact import restore_final
from .store import get_json, put_json

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2


def _outputs_block(kept: list[dict[str, Any]]) -> str:
    if not kept:
        return prompts.NO_OUTPUTS
    return "\n".join(
        prompts.AGGREGATE_OUTPUT_LINE.format(
            index=i + 1, task=k["task"], answer=k["answer"], citation=k["citation"] or "-",
            explanation=k["explanation"] or "-",
        )
        for i, k in enumerate(kept)
    )


def aggregate_messages(state: RoundState, settings: RunSettings, last_round: bool) -> list[Any]:
    stats = state.get("filter_stats") or {}
    scratchpad = state.get("scratchpad")
    user = prompts.AGGREGATE_USER.format(
        task=state["task"], round=round_number(state), max_rounds=settings.max_rounds,
        jobs=stats.get("jobs", 0), kept_count=stats.get("kept", 0),
        abstained=stats.get("abstained", 0), failed=stats.get("failed", 0), ungrounded=stats.get("ungrounded", 0),
        scratchpad=f"Your scratchpad from earlier rounds:\n{scratchpad}\n" if scratchpad else "",
        outputs=_outputs_block(state.get("kept") or []),
        last_round=prompts.AGGREGATE_LAST_ROUND if last_round else "",
    )
    return [SystemMessage(prompts.AGGREGATE_SYSTEM), HumanMessage(user)]


def outputs_from_documents(kept: list[dict[str, Any]]) -> list[str]:
    """What of the aggregation prompt came from the documents: each forwarded output's
    answer, quote and explanation, as sent (the egress ledger)."""
    return [text for k in kept for text in (k["answer"], k["citation"], k["explanation"]) if text]


def forwarded_so_far(store: BaseStore, state: RoundState, kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every output forwarded to the supervisor: this round's first, then earlier rounds'."""
    earlier = [get_json(store, r["kept_ref"]) for r in state.get("rounds") or [] if r["kept_ref"]]
    return [k for outputs in [kept, *reversed(earlier)] for k in outputs]


def _citations(outputs: list[dict[str, Any]], first: str | None = None) -> list[str]:
    """The minions' quotes behind the answer (``first``, the one it rests on, first)."""
    seen: dict[str, None] = {first: None} if first else {}
    for k in outputs:
        if k.get("citation"):
            seen.setdefault(k["citation"], None)
    return list(seen)[:20]


def _most_common_answer(kept: list[dict[str, Any]]) -> str:
    answers = Counter(k["answer"] for k in kept if k.get("answer"))
    return answers.most_common(1)[0][0] if answers else "No answer could be determined from the documents."


def over_budget(store: BaseStore, state: RoundState, round_: int, why: str) -> dict[str, Any]:
    """The end of a run whose remote budget does not afford another round (decompose):
    the answer extracted from the minions' outputs of the rounds before (nodes.extractive),
    and a note."""
    outputs = forwarded_so_far(store, state, [])
    extracted = extract(state["task"], outputs)
    note = (f"round {round_}: the remote budget does not afford another round ({why}); the answer is extracted from "
            "the minions' outputs of the rounds before")
    log.warning(note)
    final = FinalAnswer(answer=extracted.answer, explanation=extracted.explanation,
                        citations=_citations(outputs, extracted.quote), rounds=round_ - 1, forced=True, fallback=True,
                        quote=extracted.quote)
    emit({"type": "aggregate", "round": round_, "decision": "provide_final_answer"})
    return {"final": restore_final(final, state.get("redactions") or {}), "notes": [note]}


def _short(text: str | None, limit: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."


def make_aggregate(models: ModelProvider) -> Callable[[RoundState, Runtime[Any]], dict[str, Any]]:
    def aggregate(state: RoundState, runtime: Runtime[Any]) -> dict[str, Any]:
        settings = settings_of(state)
        round_ = round_number(state)
        last_round = round_ >= settings.max_rounds
        kept = state.get("kept") or []
        client = models.client(settings.remote, "remote", settings.remote_max_tokens)
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
            parsed = AggregateDecision(decision="provide_final_answer", answer=_most_common_answer(kept),
                                       explanation="The remote budget is spent.", feedback=None, scratchpad=None)
        elif parsed is None:
            fallback = True
            note = f"round {round_}: the supervisor's aggregation reply was unusable ({_short(error)})"
            log.warning(note)
            notes.append(note)
            parsed = AggregateDecision(
                decision="provide_final_answer" if last_round else "request_additional_info",
                answer=_most_common_answer(kept),
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
                    f"minions: " + (f"the best-supported grounded answer (job {extracted.job_id})" if extracted.job_id
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
                answer=parsed.answer or _most_common_answer(kept), explanation=parsed.explanation,
                citations=_citations(outputs, quote), rounds=round_, forced=forced, fallback=fallback, quote=quote,
            ), state.get("redactions") or {})
        emit({"type": "aggregate", "round": round_, "decision": decision["decision"]})
        return update

    return aggregate
