"""Running a suite: every item x protocol is a thread, scored as it finishes.

An eval lives in one output folder:

- ``eval.json``: what was asked (an id, the suite's path and hash, each document's
  hash, each protocol's settings). A folder holds one eval: running it again with
  the same suite, documents and settings resumes it, and may add protocols, a larger
  ``--limit`` or a judge; anything else is refused. One process at a time (a lock).
- ``results.jsonl``: one line per item x protocol, appended as each finishes
  (answer, verdict, judge verdict, usage, time, thread). A later line for the same
  pair replaces an earlier one (a failed run that was resumed).
- the threads, in the folder's own SQLite files unless ``checkpoint`` says
  otherwise, so ``minionflow show THREAD --checkpoint FOLDER`` opens any of them.

Thread ids are derived from the eval's id, the item and the protocol (UUID 5), so an
interrupted eval resumes each unfinished thread where it stopped, and runs nothing
that finished; two eval folders sharing one ``--checkpoint`` never share a thread.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from minionflow.contracts.errors import BadInput
from minionflow.contracts.settings import ModelSpec, RunSettings
from minionflow.graphs.protocols import protocol_for
from minionflow.graphs.run import RunContext, RunResult, finished_result, run_minions
from minionflow.graphs.threads import show_thread
from minionflow.nodes.ingest import check_fits
from minionflow.serving.models import ModelProvider
from minionflow.storage.documents import LoadedDocument, load_document
from minionflow.storage.persistence import Location, open_persistence
from pydantic import BaseModel, Field, ValidationError, model_validator

from .funnel import Funnel, has_funnel, thread_funnel
from .judge import JudgeVerdict, judge_answer
from .matchers import is_correct
from .suite import Suite, SuiteItem

log = logging.getLogger(__name__)

MANIFEST, RESULTS = "eval.json", "results.jsonl"
NAMESPACE = uuid.UUID("6f1b7e0e-8a55-4e0b-9d43-2f0b1c9d7a11")

Status = Literal["answered", "failed", "refused", "paused", "awaiting_approval"]


class Manifest(BaseModel):
    """What an output folder's eval is. Resuming needs the same suite, the same
    documents and, for each protocol already run, the same settings; more protocols,
    a larger --limit or a judge can be added."""

    eval_id: str = Field(default_factory=lambda: uuid.uuid4().hex)  # threads of two eval folders never meet
    suite: str
    suite_sha256: str
    documents: dict[str, str]  # path (as the suite gives it) -> sha256 of the file
    settings: dict[str, dict[str, Any]]  # protocol -> RunSettings


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
    quote: str | None = None  # the passage the answer rests on (it may complete an "all" answer, never be one)
    correct: bool | None = None  # the deterministic verdict; None when the item is not scored
    judge: JudgeVerdict | None = None  # recorded apart, never mixed into ``correct``
    # where the expected answer was lost (evaluation.funnel); None: unanswerable, unscored or not answered
    funnel: Funnel | None = None
    match: str
    tags: list[str] = Field(default_factory=list)
    fallback: bool = False  # the answer came from a fallback (extractive, or an unusable reply)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    elapsed_s: float = 0.0  # of the last leg, for a run that was resumed
    resumed: bool = False  # the thread had started before this eval process ran it
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

    @model_validator(mode="after")
    def _settings_for_every_protocol(self) -> EvalPlan:
        missing = [p for p in self.protocols if p not in self.settings]
        if missing:
            raise ValueError(f"no settings for protocol {missing[0]!r}")
        return self

    @property
    def items(self) -> list[SuiteItem]:
        return self.suite.items[: self.limit] if self.limit else list(self.suite.items)

    @property
    def location(self) -> Location:
        return self.checkpoint if self.checkpoint is not None else self.out_dir


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def thread_id(manifest: Manifest, item: SuiteItem, protocol: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{manifest.eval_id}/{item.id}/{protocol}"))


def _normalised(stored: dict[str, Any]) -> dict[str, Any] | None:
    """Stored settings as today's model writes them (None when they no longer validate)."""
    try:
        return RunSettings.model_validate(stored).model_dump(mode="json")
    except ValidationError:
        return None


def prepare_out_dir(plan: EvalPlan) -> Manifest:
    """Create the output folder's manifest, or check that the folder holds this eval
    (BadInput if not) and add the protocols it did not run yet."""
    documents = {d: _sha256(p) for item in plan.suite.items for d, p in zip(item.documents, plan.suite.document_paths(item),
                                                                             strict=True)}
    settings = {p: plan.settings[p].model_dump(mode="json") for p in plan.protocols}
    path = plan.out_dir / MANIFEST
    if path.exists():
        try:
            manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValidationError, OSError, ValueError) as exc:
            raise BadInput(f"{path}: not an eval manifest ({type(exc).__name__}); use another --out") from None
        if manifest.suite_sha256 != plan.suite.sha256:
            raise BadInput(f"{plan.out_dir} holds an eval of another suite (or the suite changed); use another --out")
        changed = sorted(d for d, sha in documents.items() if manifest.documents.get(d, sha) != sha)
        if changed:
            raise BadInput(f"{plan.out_dir} holds an eval of other documents ({changed[0]} changed since); use another --out")
        # read the stored settings through today's model: a field added since (with its default) is no change
        differ = [p for p in plan.protocols if p in manifest.settings and _normalised(manifest.settings[p]) != settings[p]]
        if differ:
            raise BadInput(f"{plan.out_dir} ran {differ[0]} with other settings; use another --out, or the same settings")
        added = {p: s for p, s in settings.items() if p not in manifest.settings}
        if not added:
            return manifest
        manifest = manifest.model_copy(update={"settings": {**manifest.settings, **added}})
    else:
        manifest = Manifest(suite=str(plan.suite.path), suite_sha256=plan.suite.sha256, documents=documents,
                            settings=settings)
    try:
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists() and (plan.out_dir / RESULTS).exists():
            raise BadInput(f"{plan.out_dir} has {RESULTS} but no {MANIFEST}; use another --out")
        path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write the eval folder {plan.out_dir}: {exc.strerror or exc}") from None
    return manifest


@contextmanager
def eval_lock(out_dir: Path) -> Iterator[None]:
    """One eval process per folder at a time (an advisory lock on ``.lock``)."""
    import fcntl

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = (out_dir / ".lock").open("a")
    except OSError as exc:
        raise BadInput(f"cannot write the eval folder {out_dir}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput(f"another minionflow eval is running in {out_dir}") from None
        yield


def _mend_results(out_dir: Path) -> None:
    """Cut a torn last line (a kill mid-write) so the next line starts on its own; the
    run it held finished, and its thread gives the result again."""
    path = out_dir / RESULTS
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_results(out_dir: Path) -> dict[tuple[str, str], ItemResult]:
    """The latest result of each (item, protocol) in results.jsonl; a torn last line
    (a kill mid-write) is ignored."""
    path = out_dir / RESULTS
    results: dict[tuple[str, str], ItemResult] = {}
    if not path.exists():
        return results
    for number, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1):
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


def judged_text(answer: str | None, quote: str | None) -> str:
    """What the judge reads: the answer, and the quote it rests on when it has one."""
    return (answer or "") + (f'\n(The answer rests on this passage of the documents: "{quote}")' if quote else "")


def item_result(item: SuiteItem, protocol: str, run: RunResult) -> ItemResult:
    answered = run.status == "answered"
    return ItemResult(
        item_id=item.id, protocol=protocol, status=run.status, answer=run.answer, quote=run.quote,
        correct=is_correct(item, run.answer if answered else None, run.quote) if item.scored else None,
        match=item.match, tags=item.tags, fallback=run.fallback, notes=run.notes, error=run.error,
        usage=_usage(run), elapsed_s=run.elapsed_s, thread_id=run.thread_id,
    )


class DocumentCache:
    """Documents are read when an item needs them, the last few kept (consecutive items
    often share one); ``check`` reads every one up front, so an unreadable document is
    refused before any model call, without holding them all (FinanceBench has 300 PDFs)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._docs: OrderedDict[Path, LoadedDocument] = OrderedDict()

    def check(self, paths: Iterable[Path]) -> None:
        for p in dict.fromkeys(paths):
            self.load([p])

    def load(self, paths: list[Path]) -> list[LoadedDocument]:
        out = []
        for p in paths:
            if p in self._docs:
                self._docs.move_to_end(p)
            else:
                self._docs[p] = load_document(p)
                while len(self._docs) > self.keep:
                    self._docs.popitem(last=False)
            out.append(self._docs[p])
        return out


ItemHook = Callable[[SuiteItem, str, ItemResult | None], None]


def run_eval(
    plan: EvalPlan,
    *,
    context: RunContext | None = None,
    judge_models: ModelProvider | None = None,
    on_start: ItemHook | None = None,
    on_done: ItemHook | None = None,
) -> list[ItemResult]:
    """Run (or resume) the eval; returns the latest result of every item x protocol
    that has one. ``context``: the models, sandbox, event handler and run control every
    run gets (each with its protocol's settings). Stops early, with what finished saved,
    when the control drains (Ctrl-C): the paused run's thread resumes on the next call.
    Bad input (an unreadable document, a folder that holds another eval or is in use)
    raises ``BadInput`` before any model is called."""
    context = context or RunContext()
    control = context.control
    docs = DocumentCache()
    docs.check(p for item in plan.items for p in plan.suite.document_paths(item))
    with eval_lock(plan.out_dir):
        manifest = prepare_out_dir(plan)
        _mend_results(plan.out_dir)
        done = read_results(plan.out_dir)
        _add_funnels(plan, done)
        for item in plan.items:
            for protocol in plan.protocols:
                result = _one(plan, manifest, item, protocol, done.get((item.id, protocol)), docs, context,
                              judge_models, on_start)
                if result is not None and result.status != "paused":
                    _append(plan.out_dir, result)
                    done[(item.id, protocol)] = result
                if on_done:
                    on_done(item, protocol, result)
                if (result is not None and result.status == "paused") or (control is not None and control.drain_requested):
                    return _ordered(plan, done)
    return _ordered(plan, done)


def _add_funnels(plan: EvalPlan, done: dict[tuple[str, str], ItemResult]) -> None:
    """Results written before funnels were recorded get theirs, from their threads (a
    line each, replacing the old one); nothing is run."""
    for item in plan.items:
        for protocol in plan.protocols:
            old = done.get((item.id, protocol))
            if old is None or old.funnel is not None:
                continue
            new = with_funnel(plan, item, old)
            if new.funnel is not None:
                _append(plan.out_dir, new)
                done[(item.id, protocol)] = new


def _one(plan: EvalPlan, manifest: Manifest, item: SuiteItem, protocol: str, previous: ItemResult | None,
         docs: DocumentCache, context: RunContext, judge_models: ModelProvider | None,
         on_start: ItemHook | None) -> ItemResult | None:
    """One item x protocol: run (or resume) it, or only judge a finished one the judge
    has not read; None when there is nothing new."""
    judged = previous is not None and previous.judge is not None and plan.judge is not None \
        and previous.judge.model == plan.judge.label
    if previous is not None and previous.status in ("answered", "refused"):
        if plan.judge is None or judged or previous.status != "answered" or not item.scored:
            return None
        result = previous.model_copy()
    else:
        if on_start:
            on_start(item, protocol, previous)
        result = _run_one(plan, manifest, item, protocol, docs, context)
    if plan.judge is not None and result.status == "answered" and item.scored:
        result.judge = judge_answer(plan.judge, item, judged_text(result.answer, result.quote), judge_models)
    return result


def _ordered(plan: EvalPlan, done: dict[tuple[str, str], ItemResult]) -> list[ItemResult]:
    return [done[(i.id, p)] for i in plan.items for p in plan.protocols if (i.id, p) in done]


def _run_one(plan: EvalPlan, manifest: Manifest, item: SuiteItem, protocol: str, docs: DocumentCache,
             context: RunContext) -> ItemResult:
    tid = thread_id(manifest, item, protocol)
    exists, finished = finished_result(tid, plan.location)
    if finished is not None:  # it finished, but was killed before its line was written
        run = finished.model_copy(update={"elapsed_s": round(sum(c["latency_s"] for c in finished.calls), 3)})
        return with_funnel(plan, item, item_result(item, protocol, run).model_copy(update={"resumed": True}))
    documents = docs.load(plan.suite.document_paths(item))
    settings = plan.settings[protocol]
    try:
        check_fits(protocol_for(settings), settings, documents)
    except BadInput as exc:  # the documents do not fit the context of the model that must read them whole
        return ItemResult(item_id=item.id, protocol=protocol, status="refused", error=str(exc), match=item.match,
                          tags=item.tags, correct=False if item.scored else None, thread_id=None)
    try:
        run = run_minions(documents, item.question, context.with_settings(settings), thread_id=tid,
                          checkpoint=plan.location)
    except BadInput as exc:  # not this item's fault (the thread store says no): a failure, tried again next time
        return ItemResult(item_id=item.id, protocol=protocol, status="failed", error=str(exc), match=item.match,
                          tags=item.tags, correct=False if item.scored else None, thread_id=tid, resumed=exists)
    return with_funnel(plan, item, item_result(item, protocol, run).model_copy(update={"resumed": exists}))


def with_funnel(plan: EvalPlan, item: SuiteItem, result: ItemResult) -> ItemResult:
    """The result with its loss funnel, read from its thread (evaluation.funnel); as it was
    when the question has none, the run did not answer, or its thread cannot be read."""
    if not has_funnel(item) or result.status != "answered" or result.thread_id is None:
        return result
    try:
        with open_persistence(plan.location) as (saver, store):
            found = thread_funnel(item, show_thread(saver, store, result.thread_id), store)
    except Exception as exc:  # noqa: BLE001 - a thread another version wrote, a blob or a --graph module gone:
        # the funnel is a reading of the thread, never a reason to stop the eval
        log.warning("%s / %s: no loss funnel (%s: %s)", item.id, result.protocol, type(exc).__name__, exc)
        return result
    return result.model_copy(update={"funnel": found})
