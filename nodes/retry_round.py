"""retry_round: prepare the next round. The feedback and scratchpad stay in state
(the next decompose prompt shows them), failed jobs are carried over to be run
again, and this round's jobs and results become the "previous round" that the
supervisor's code receives."""

from __future__ import annotations

from typing import Any

from langgraph.config import get_store
from minionflow.contracts.state import JobRecord, JobResult, MinionsState

from .common import emit, settings_of
from .store import get_json


def retry_round(state: MinionsState) -> dict[str, Any]:
    settings = settings_of(state)
    store = get_store()
    jobs_ref, results_ref = state.get("jobs_ref"), state.get("results_ref")
    jobs: list[JobRecord] = get_json(store, jobs_ref)["jobs"] if jobs_ref else []
    results: list[JobResult] = get_json(store, results_ref) if results_ref else []
    failed_ids = {r["job_id"] for r in results if r["status"] == "failed"}
    retry = [j for j in jobs if j["job_id"] in failed_ids and j["attempt"] < settings.max_job_attempts]
    next_round = state["round"] + 1
    emit({"type": "round", "round": next_round, "retrying": len(retry)})
    return {
        "round": next_round,
        "code": None,
        "code_errors": [],
        "prev_jobs_ref": jobs_ref,
        "prev_results_ref": results_ref,
        "retry_jobs": retry,
        "jobs_ref": None,
        "job_count": 0,
        "results_ref": None,
        "kept": [],
        "filter_stats": {},
        "decision": None,
    }
