"""Running a suite: every item x protocol is a thread, scored as it finishes.

An eval lives in one output folder:

- ``eval.json``: what was asked (the suite's path and hash, the protocols, each
  protocol's settings, the judge). A folder holds one eval: running it again with
  the same suite and settings resumes it; anything else is refused.
- ``results.jsonl``: one line per item x protocol, appended as each finishes
  (answer, verdict, judge verdict, usage, time, thread). A later line for the same
  pair replaces an earlier one (a failed run that was resumed).
- the threads, in the folder's own SQLite files unless ``checkpoint`` says
  otherwise, so ``minionflow show THREAD --checkpoint FOLDER`` opens any of them.

Thread ids are derived from the eval and the item (UUID 5), so an interrupted eval
resumes each unfinished thread where it stopped, and runs nothing that finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from langgraph.runtime import RunControl
from minionflow.graphs.persistence import Location
from minionflow.graphs.run import RunResult, finished_result, run_minions
from minionflow.graphs.settings import ModelSpec, RunSettings
from minionflow.nodes.documents import BadInput, LoadedDocument, load_document
from minionflow.nodes.models import ModelProvider
from minionflow.sandbox.base import SandboxBackend
from pydantic import BaseModel, Field, ValidationError

from .judge import JudgeVerdict, judge_answer
from .matchers import is_correct
from .suite import Suite, SuiteItem

log = logging.getLogger(__name__)

MANIFEST, RESULTS = "eval.json", "results.jsonl"
NAMESPACE = uuid.UUID("6f1b7e0e-8a55-4e0b-9d43-2f0b1c9d7a11")

Status = Literal["answered", "failed", "refused", "paused", "awaiting_approval"]


class Manifest(BaseModel):
    """What an output folder's eval is: resuming needs the same."""

    suite: str
    suite_sha256: str
    protocols: list[str]
    settings: dict[str, dict[str, Any]]
    judge: str | None = None
    limit: int | None = None

    @property
    def key(self) -> str:
        data = self.model_dump(mode="json", exclude={"suite"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class Usage(BaseModel):
    remote_prompt_tokens: int = 0
    remote_completion_tokens: int = 0
    local_prompt_tokens: int = 0
    local_completion_tokens: int = 0
    cost_usd: float = 0.0
    remote_only_cost_usd: float = 0.0  # the estimate of sending everything to the remote model


class ItemResult(BaseModel):
    """One line of results.jsonl: one item run by one protocol."""

    item_id: str
    protocol: str
    status: Status
    answer: str | None = None
    quote: str | None = None  # the passage the answer rests on (scored with it: the user reads both)
    correct: bool | None = None  # the deterministic verdict; None when the item is not scored
    judge: JudgeVerdict | None = None  # recorded apart, never mixed into ``correct``
    match: str
    tags: list[str] = Field(default_factory=list)
    fallback: bool = False  # the answer came from a fallback (extractive, or an unusable reply)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    elapsed_s: float = 0.0
    thread_id: str | None = None


class EvalPlan(BaseModel):
    """Everything an eval needs, validated."""

    suite: Suite
    protocols: list[str] = Field(min_length=1)
    settings: dict[str, RunSettings]
    out_dir: Path
    checkpoint: Location | None = None  # default: the output folder
    judge: ModelSpec | None = None
    limit: int | None = Field(None, ge=1)

    @property
    def items(self) -> list[SuiteItem]:
        return self.suite.items[: self.limit] if self.limit else list(self.suite.items)

    @property
    def location(self) -> Location:
        return self.checkpoint if self.checkpoint is not None else self.out_dir

    def manifest(self) -> Manifest:
        return Manifest(
            suite=str(self.suite.path), suite_sha256=self.suite.sha256, protocols=self.protocols,
            settings={p: self.settings[p].model_dump(mode="json") for p in self.protocols},
            judge=self.judge.label if self.judge else None, limit=self.limit,
        )


def thread_id(manifest: Manifest, item: SuiteItem, protocol: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{manifest.key}/{item.id}/{protocol}"))


def prepare_out_dir(plan: EvalPlan) -> Manifest:
    """Create the output folder, or check that it holds this same eval (BadInput if not)."""
    manifest = plan.manifest()
    path = plan.out_dir / MANIFEST
    if path.exists():
        try:
            existing = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValidationError, OSError, ValueError) as exc:
            raise BadInput(f"{path}: not an eval manifest ({type(exc).__name__}); use another --out") from None
        if existing.key != manifest.key:
            differs = [k for k in ("suite_sha256", "protocols", "settings", "judge", "limit")
                       if getattr(existing, k) != getattr(manifest, k)]
            raise BadInput(f"{plan.out_dir} holds another eval (its {', '.join(differs) or 'settings'} differ); "
                           "use another --out, or delete that folder to start over")
        return existing
    try:
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        if any(p.name == RESULTS for p in plan.out_dir.iterdir()):
            raise BadInput(f"{plan.out_dir} has {RESULTS} but no {MANIFEST}; use another --out")
        path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write the eval folder {plan.out_dir}: {exc.strerror or exc}") from None
    return manifest


def read_results(out_dir: Path) -> dict[tuple[str, str], ItemResult]:
    """The latest result of each (item, protocol) in results.jsonl; a torn last line
    (a kill mid-write) is ignored."""
    path = out_dir / RESULTS
    results: dict[tuple[str, str], ItemResult] = {}
    if not path.exists():
        return results
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = ItemResult.model_validate_json(line)
        except ValidationError:
            log.warning("%s:%d: unreadable result line, ignored (it will be run again)", path, number)
            continue
        results[(r.item_id, r.protocol)] = r
    return results


def _append(out_dir: Path, result: ItemResult) -> None:
    with (out_dir / RESULTS).open("a", encoding="utf-8") as f:
        f.write(result.model_dump_json() + "\n")
        f.flush()


def _usage(result: RunResult) -> Usage:
    u = result.usage
    if u is None:
        return Usage()
    return Usage(
        remote_prompt_tokens=u.remote.prompt_tokens, remote_completion_tokens=u.remote.completion_tokens,
        local_prompt_tokens=u.local.prompt_tokens, local_completion_tokens=u.local.completion_tokens,
        cost_usd=round(u.total_cost_usd, 6), remote_only_cost_usd=round(u.remote_only_cost_usd, 6),
    )


def scored_text(answer: str | None, quote: str | None) -> str:
    """What a verdict reads: the answer, and the quote it rests on when it has one."""
    return " ".join(x for x in (answer, f'"{quote}"' if quote else None) if x)


def item_result(item: SuiteItem, protocol: str, run: RunResult) -> ItemResult:
    answered = run.status == "answered"
    return ItemResult(
        item_id=item.id, protocol=protocol, status=run.status, answer=run.answer, quote=run.quote,
        correct=is_correct(item, scored_text(run.answer, run.quote) if answered else None) if item.scored else None,
        match=item.match, tags=item.tags, fallback=run.fallback_answer, notes=run.notes, error=run.error,
        usage=_usage(run), elapsed_s=run.elapsed_s, thread_id=run.thread_id,
    )


class DocumentCache:
    """Documents are read once per eval (many items share one)."""

    def __init__(self) -> None:
        self._docs: dict[Path, LoadedDocument] = {}

    def load(self, paths: list[Path]) -> list[LoadedDocument]:
        out = []
        for p in paths:
            if p not in self._docs:
                self._docs[p] = load_document(p)
            out.append(self._docs[p])
        return out


ItemHook = Callable[[SuiteItem, str, ItemResult | None], None]


def run_eval(
    plan: EvalPlan,
    *,
    models: ModelProvider | None = None,
    sandbox: SandboxBackend | None = None,
    judge_models: ModelProvider | None = None,
    on_start: ItemHook | None = None,
    on_done: ItemHook | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    control: RunControl | None = None,
) -> list[ItemResult]:
    """Run (or resume) the eval; returns the latest result of every item x protocol
    that has one. Stops early, with what finished saved, when ``control`` drains
    (Ctrl-C): the paused run's thread resumes on the next call."""
    docs = DocumentCache()
    for item in plan.items:  # an unreadable document is bad input: refused before any model call
        docs.load(plan.suite.document_paths(item))
    manifest = prepare_out_dir(plan)
    done = read_results(plan.out_dir)
    for item in plan.items:
        for protocol in plan.protocols:
            previous = done.get((item.id, protocol))
            if previous is not None and previous.status in ("answered", "refused"):
                if on_done:
                    on_done(item, protocol, None)  # nothing new
                continue
            if on_start:
                on_start(item, protocol, previous)
            result = _run_one(plan, manifest, item, protocol, docs, models, sandbox, on_event, control)
            if plan.judge is not None and result.status == "answered" and item.scored:
                result.judge = judge_answer(plan.judge, item, scored_text(result.answer, result.quote), judge_models)
            if result.status != "paused":
                _append(plan.out_dir, result)
                done[(item.id, protocol)] = result
            if on_done:
                on_done(item, protocol, result)
            if result.status == "paused" or (control is not None and control.drain_requested):
                return _ordered(plan, done)
    return _ordered(plan, done)


def _ordered(plan: EvalPlan, done: dict[tuple[str, str], ItemResult]) -> list[ItemResult]:
    return [done[(i.id, p)] for i in plan.items for p in plan.protocols if (i.id, p) in done]


def _run_one(plan: EvalPlan, manifest: Manifest, item: SuiteItem, protocol: str, docs: DocumentCache,
             models: ModelProvider | None, sandbox: SandboxBackend | None,
             on_event: Callable[[dict[str, Any]], None] | None, control: RunControl | None) -> ItemResult:
    tid = thread_id(manifest, item, protocol)
    finished = finished_result(tid, plan.location)
    if finished is not None:  # it finished, but was killed before its line was written
        run = finished.model_copy(update={"elapsed_s": round(sum(c["latency_s"] for c in finished.calls), 3)})
        return item_result(item, protocol, run)
    started = time.monotonic()
    try:
        documents = docs.load(plan.suite.document_paths(item))
        run = run_minions(documents, item.question, plan.settings[protocol], thread_id=tid, checkpoint=plan.location,
                          models=models, sandbox=sandbox, on_event=on_event, control=control)
    except BadInput as exc:  # e.g. the documents do not fit the local model's context (local-only, minion)
        return ItemResult(item_id=item.id, protocol=protocol, status="refused", error=str(exc), match=item.match,
                          tags=item.tags, correct=False if item.scored else None,
                          elapsed_s=round(time.monotonic() - started, 3), thread_id=None)
    return item_result(item, protocol, run)
