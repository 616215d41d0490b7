"""What the supervisor's aggregation reads, and the end of a run the remote budget stops:
shared by aggregate and decompose (which counts an aggregation's prompt before a round)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.store.base import BaseStore
from minionflow.contracts.events import emit
from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import FinalAnswer, RoundState, round_number
from minionflow.storage.store import get_json

from . import prompts
from .extractive import extract
from .redaction import restore_final

log = logging.getLogger(__name__)


def outputs_block(kept: list[dict[str, Any]]) -> str:
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
        outputs=outputs_block(state.get("kept") or []),
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


def citations(outputs: list[dict[str, Any]], first: str | None = None) -> list[str]:
    """The minions' quotes behind the answer (``first``, the one it rests on, first)."""
    seen: dict[str, None] = {first: None} if first else {}
    for k in outputs:
        if k.get("citation"):
            seen.setdefault(k["citation"], None)
    return list(seen)[:20]


def most_common_answer(kept: list[dict[str, Any]]) -> str:
    answers = Counter(k["answer"] for k in kept if k.get("answer"))
    return answers.most_common(1)[0][0] if answers else "No answer could be determined from the documents."


def over_budget(store: BaseStore, state: RoundState, round_: int, why: str) -> dict[str, Any]:
    """The end of a run whose remote budget does not afford another round (decompose):
    the answer extracted from the minions' outputs of the rounds before (nodes.support.extractive),
    and a note."""
    outputs = forwarded_so_far(store, state, [])
    extracted = extract(state["task"], outputs)
    note = (f"round {round_}: the remote budget does not afford another round ({why}); the answer is extracted from "
            "the minions' outputs of the rounds before")
    log.warning(note)
    final = FinalAnswer(answer=extracted.answer, explanation=extracted.explanation,
                        citations=citations(outputs, extracted.quote), rounds=round_ - 1, forced=True, fallback=True,
                        quote=extracted.quote)
    emit({"type": "aggregate", "round": round_, "decision": "provide_final_answer"})
    return {"final": restore_final(final, state.get("redactions") or {}), "notes": [note]}
