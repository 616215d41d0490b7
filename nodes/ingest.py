"""ingest: turn a run request (a question, documents, settings) into the initial
MinionsState. The documents go into the blob store; state keeps references.

The CLI and ``run_minions`` call ``initial_state`` directly. Graphs served by
``langgraph dev`` (LangGraph Studio, the SDK) start with this node instead, so a
run can be started from any LangGraph client with plain JSON input.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from minionflow.contracts.errors import BadInput
from minionflow.contracts.protocol import Protocol
from minionflow.contracts.settings import RunSettings, default_settings, first_error
from minionflow.contracts.state import MINIONS_START, DocumentRef, MinionsState, RunState
from minionflow.nodes.support.context import RunContext, store_of
from minionflow.serving.tokens import count_document
from minionflow.storage.documents import LoadedDocument, load_document
from minionflow.storage.store import put_json, put_text
from pydantic import BaseModel, Field, ValidationError
from typing_extensions import TypedDict


class RunRequest(TypedDict, total=False):
    """The input of a served graph (what Studio's input form shows)."""

    question: str
    paths: list[str]  # files (.txt, .md, .pdf) on the machine that runs the graph
    texts: list[dict[str, str]]  # or inline documents: {"title": ..., "text": ...}
    settings: dict[str, Any]  # RunSettings fields to change, e.g. {"remote": "openai:gpt-4o"}


class InlineDocument(BaseModel):
    title: str = "document"
    text: str


class ValidRequest(BaseModel):
    question: str
    paths: list[str] = Field(default_factory=list)
    texts: list[InlineDocument] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


def run_state(store: BaseStore, documents: list[LoadedDocument], task: str, settings: RunSettings) -> RunState:
    """The fields every protocol's run starts with: the settings (stored, and their hash),
    the question, and the documents, stored as blobs."""
    if not task.strip():
        raise BadInput("the question is empty")
    if not documents:
        raise BadInput("no documents given")
    refs = [
        DocumentRef(sha256=put_text(store, d.text), title=d.title, chars=len(d.text), pages=d.pages)
        for d in documents
    ]
    settings_data = settings.model_dump(mode="json")
    return RunState(settings=settings_data, settings_ref=put_json(store, settings_data), task=task.strip(),
                    documents=refs, final=None)


def initial_state(store: BaseStore, documents: list[LoadedDocument], task: str, settings: RunSettings) -> MinionsState:
    """A MinionS run's initial state."""
    return MinionsState(**run_state(store, documents, task, settings), **copy.deepcopy(MINIONS_START))  # type: ignore[typeddict-item]


def protocol_state(protocol: Protocol, store: BaseStore, documents: list[LoadedDocument], task: str,
                   settings: RunSettings) -> dict[str, Any]:
    """The initial state of a run of ``protocol``: the shared fields and the protocol's own."""
    return {**run_state(store, documents, task, settings), **copy.deepcopy(dict(protocol.start))}


# What a local model's prompt holds besides the documents (instructions, the question,
# the reply), in tokens.
PROMPT_RESERVE_TOKENS = 600


def check_fits(protocol: Protocol, settings: RunSettings, documents: list[LoadedDocument]) -> None:
    """A protocol where one model reads every document (``Protocol.reads_whole``) needs them
    to fit its context window: refuse before any call rather than fail on every turn. The
    local model's window is its spec's; the remote model's is checked when it is known
    (the embedded server, which minionflow starts with it, or a ``;ctx=N``): a hosted
    model's own error says otherwise."""
    role = protocol.reads_whole
    if role is None:
        return
    spec, max_tokens = (settings.local, settings.local_max_tokens) if role == "local" else \
        (settings.remote, settings.remote_max_tokens)
    if role == "remote" and not spec.window_known:
        return
    tokens = sum(count_document(d.text) for d in documents)  # kept for the run's remote-only estimate
    room = spec.context_window - max_tokens - PROMPT_RESERVE_TOKENS
    if tokens > room:
        raise BadInput(
            f"the documents are about {tokens:,} tokens and the {role} model's context holds {room:,} after the prompt "
            f"and reply: {protocol.name} needs them whole; minions (the default) reads them in chunks"
        )


def request_state(store: BaseStore, request: dict[str, Any], protocol: Protocol,
                  settings: RunSettings | dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a run request and build the initial state of a run of ``protocol`` from it
    (BadInput if unusable). ``settings``: the run's, when its context gave them (the
    request then gives none): as a LangGraph client sent them (JSON, read as the request's
    would be), or made."""
    try:
        valid = ValidRequest.model_validate(request)
        if settings is not None and valid.settings:
            raise BadInput("give the run's settings once: in its context or in the request, not both")
        if settings is None or isinstance(settings, dict):
            given = valid.settings if settings is None else settings
            settings = default_settings({**given, "protocol": protocol.name}, min_rounds=protocol.min_rounds)
        elif settings.protocol != protocol.name:  # a served graph runs its own protocol
            settings = settings.model_copy(update={"protocol": protocol.name})
    except ValidationError as exc:
        where, message = first_error(exc)
        raise BadInput(f"invalid run request at {where}: {message}" if where else f"invalid run request: {message}") from None
    protocol.check(settings)
    documents = [LoadedDocument(title=d.title, text=d.text, pages=1) for d in valid.texts if d.text.strip()]
    documents += [load_document(p) for p in valid.paths]
    check_fits(protocol, settings, documents)
    return protocol_state(protocol, store, documents, valid.question, settings)


def make_ingest(protocol: Protocol) -> Callable[[dict[str, Any], Runtime[RunContext]], dict[str, Any]]:
    """The ingest step of a served graph of ``protocol``. The settings are the run
    context's when it has some (Studio's form for it), else the request's; the context
    takes the ones the thread records, so every later step runs with them."""

    def ingest(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
        request = {k: state[k] for k in ("question", "paths", "texts", "settings") if state.get(k) is not None}
        context = runtime.context if isinstance(runtime.context, RunContext) else None
        given = None if context is None else context.requested if context.requested is not None else context.settings
        update = request_state(store_of(runtime), request, protocol, given)
        if context is not None:
            context.adopt(RunSettings.model_validate(update["settings"]))
        update["texts"] = []  # the text is in the blob store now; later checkpoints need not carry it
        return update

    return ingest
