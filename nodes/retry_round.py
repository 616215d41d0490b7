"""retry_round: prepare the next round. The feedback and scratchpad stay in state
(the next decompose prompt shows them), failed jobs are carried over to be run
again, and this round's jobs and results become the "previous round" that the
supervisor's code receives."""

from __future__ import annotations

from typing import Any

from langgraph.types import Overwrite

from minionflow.graphs.state import MinionsState

from .common import emit, settings_of


def retry_round(state: MinionsState) -> dict[str, Any]:
    settings = settings_of(state)
    jobs = state.get("jobs") or []
    results = [r for r in state.get("job_results") or [] if r["round"] == state["round"]]
    failed_ids = {r["job_id"] for r in results if r["status"] == "failed"}
    retry = [j for j in jobs if j["job_id"] in failed_ids and j["attempt"] < settings.max_job_attempts]
    next_round = state["round"] + 1
    emit({"type": "round", "round": next_round, "retrying": len(retry)})
    return {
        "round": next_round,
        "code": None,
        "code_errors": [],
        "prev_jobs": jobs,
        "prev_results": results,
        "retry_jobs": retry,
        "jobs": [],
        "job_results": Overwrite([]),
        "kept": [],
        "filter_stats": {},
        "decision": None,
    }
