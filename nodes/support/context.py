"""What every step of a run gets besides its state: the run's ``RunContext``, LangGraph's
``context_schema`` of every minionflow graph, passed with ``context=`` and read by a step as
``runtime.context`` (beside ``runtime.store``, which holds the texts).

    graph.invoke(state, config, context=RunContext(settings=RunSettings(...)))

It holds the run's settings (validated once, when the context is made), the model
provider steps get their clients from, the sandbox backend the supervisor's code runs in
(chosen from the settings on first use when none is given), and for the code that drives
the run, the handler of its progress events and its run control (pause at the next step).
Its settings are the thread's: ``run_minions`` records them in the first checkpoint, and a
resume or a fork makes the context again from the settings the thread stored; a step
that finds a thread started with other settings refuses to go on (``context_of``).

LangGraph Studio and other LangGraph clients send the context as JSON (its schema,
``settings`` alone, is Studio's form for it); a served graph run with no context takes the
settings its run request gave, kept in the thread's state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langgraph.runtime import RunControl, Runtime
from langgraph.store.base import BaseStore
from minionflow.contracts.errors import BadInput
from minionflow.contracts.settings import RunSettings, default_settings
from minionflow.sandbox.base import SandboxBackend
from minionflow.serving.models import DefaultModelProvider, ModelProvider
from minionflow.storage.store import get_json, json_text, sha256_text
from pydantic import ConfigDict
from pydantic.json_schema import SkipJsonSchema

EventHandler = Callable[[dict[str, Any]], None]


@dataclass(kw_only=True)
class RunContext:
    """The run's dependencies (see the module docstring); one context is for one run.
    ``settings`` may be given as a dict (a LangGraph client's JSON): it is read as
    ``default_settings`` reads a run request's, and a served graph's ingest reads it again
    for its protocol (the rounds it needs); a served run that goes on with a thread (no
    ingest) takes the thread's stored settings. ``models``: ``DefaultModelProvider()`` unless
    given (tests give fakes)."""

    __pydantic_config__ = ConfigDict(arbitrary_types_allowed=True)  # its JSON schema: settings alone

    settings: RunSettings | None = None
    models: SkipJsonSchema[ModelProvider | None] = None
    sandbox: SkipJsonSchema[SandboxBackend | None] = None
    on_event: SkipJsonSchema[EventHandler | None] = None
    control: SkipJsonSchema[RunControl | None] = None
    # per run, not per process: the settings' hash, and what the run read once (``cached``)
    _settings_ref: SkipJsonSchema[str | None] = field(default=None, init=False, repr=False, compare=False)
    _requested: SkipJsonSchema[dict[str, Any] | None] = field(default=None, init=False, repr=False, compare=False)
    _cache: SkipJsonSchema[dict[str, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _loading: SkipJsonSchema[dict[str, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: SkipJsonSchema[Any] = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.settings, Mapping):
            self._requested = dict(self.settings)
            self.settings = default_settings(dict(self.settings))
        if self.settings is not None:
            self._settings_ref = settings_ref(self.settings)
        if self.models is None:
            self.models = DefaultModelProvider()

    @property
    def model_provider(self) -> ModelProvider:
        assert self.models is not None  # __post_init__
        return self.models

    @property
    def run_settings(self) -> RunSettings:
        """The settings, which a context that ``context_of`` gave a step always has."""
        if self.settings is None:
            raise BadInput("the run's context has no settings")
        return self.settings

    @property
    def settings_ref(self) -> str | None:
        """The settings' content hash, as the thread's state holds it (``settings_ref``)."""
        return self._settings_ref

    def backend(self) -> SandboxBackend:
        """The sandbox backend: the one given, else the one the settings choose (``auto``:
        the strongest that can run here), found once."""
        with self._lock:
            if self.sandbox is None:
                from minionflow.sandbox import get_backend

                assert self.settings is not None
                self.sandbox = get_backend(self.settings.sandbox, self.settings.sandbox_runtime)
            return self.sandbox  # type: ignore[no-any-return]

    @property
    def requested(self) -> dict[str, Any] | None:
        """The settings as a LangGraph client sent them (JSON), if it sent some."""
        return self._requested

    def cached(self, key: str, load: Callable[[], Any]) -> Any:
        """A value read once per run (a round's job batch), by its content hash: the tasks
        of a round that ask at once wait for the one that reads it."""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            value = load()
            with self._lock:
                self._cache[key] = value
                self._loading.pop(key, None)
            return value

    def adopt(self, settings: RunSettings, ref: str | None = None) -> None:
        """Take the settings a thread records (a served graph's ingest: the request's, or
        the context's with the graph's protocol), before any other step of the run.
        ``ref``: the hash the thread stored them under, when they were read back from it."""
        with self._lock:
            self.settings, self._settings_ref = settings, ref or settings_ref(settings)

    def with_settings(self, settings: RunSettings, ref: str | None = None) -> RunContext:
        """This context with other settings (a resume's or a fork's thread, an eval's
        protocol): the same models, sandbox, event handler and run control. ``ref``: the
        hash a thread stored the settings under, when they were read back from it (a
        thread an earlier version wrote holds them without the fields added since, so
        their hash is not that of the settings as read now)."""
        context = RunContext(settings=settings, models=self.models, sandbox=self.sandbox, on_event=self.on_event,
                             control=self.control)
        if ref is not None:
            context._settings_ref = ref
        return context


def context_of(runtime: Runtime[Any], state: Mapping[str, Any] | None = None,
               thread_settings: Callable[[], tuple[RunSettings, str]] | None = None) -> RunContext:
    """The run's context, with its settings: a step's one way to them. Given the step's
    ``state``, the settings are checked against the thread's (``settings_ref``): a thread
    started with other settings is not continued with these. A graph served with no
    context (a LangGraph client that sent none) runs with the settings the thread holds:
    its state's, or what ``thread_settings`` reads, with the hash they are stored under (a
    ``Send`` task's state has none)."""
    context = runtime.context
    if context is not None and not isinstance(context, RunContext):
        raise BadInput(f"minionflow steps need a RunContext as the run's context, not a {type(context).__name__}")
    if context is not None:
        with context._lock:
            given, ref, requested = context.settings, context._settings_ref, context._requested
        stored = state.get("settings_ref") if state is not None else None
        if given is not None and (not stored or stored == ref):
            return context
        if given is not None and requested is None:
            raise BadInput("this thread was started with other settings than the run's context holds; continue it "
                           "with its own (minionflow resume, or a context made from the thread's settings)")
        # a served run that goes on with a thread: the thread's settings, not those the client sent
    ref = None
    if state is not None and state.get("settings"):
        settings, ref = RunSettings.model_validate(state["settings"]), state.get("settings_ref")
    elif thread_settings is not None:
        settings, ref = thread_settings()
    else:
        raise BadInput("minionflow steps need the run's context: run the graph with "
                       "context=RunContext(settings=RunSettings(...))")
    if context is None:
        return RunContext().with_settings(settings, ref)
    context.adopt(settings, ref)  # a served run's first step that asks: once per run
    return context


def settings_ref(settings: RunSettings) -> str:
    """The settings' content hash, as a thread's state holds it (``settings_ref``)."""
    return sha256_text(json_text(settings.model_dump(mode="json")))


def store_of(runtime: Runtime[Any]) -> BaseStore:
    """The blob store a step reaches through its ``Runtime`` (the graph's ``store``)."""
    if runtime.store is None:
        raise ValueError("minionflow nodes keep texts in a LangGraph store: compile the graph with one, "
                         "e.g. graph.compile(store=InMemoryStore())")
    return runtime.store


def settings_in_store(store: BaseStore, ref: str) -> RunSettings:
    """Settings a blob holds (a round's job batch names the settings its jobs run with)."""
    return RunSettings.model_validate(get_json(store, ref))


__all__ = ["EventHandler", "RunContext", "context_of", "settings_in_store", "settings_ref", "store_of"]
