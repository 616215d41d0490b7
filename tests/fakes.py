"""Deterministic fake chat models whose replies derive from the prompt, not from
call order (parallel jobs run in any order)."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from minionflow.contracts.settings import ModelSpec
from minionflow.serving.models import ModelClient, Role
from pydantic import ConfigDict, PrivateAttr

Responder = Callable[[str], "str | tuple[str, str]"]  # the reply, or (the reply, its finish_reason)


def prompt_text(messages: list[BaseMessage]) -> str:
    return "\n".join(str(m.content) for m in messages)


class _Stats:
    """Plain mutable counters (pydantic attribute handling is slow under many threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prompts: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0


class PromptFake(BaseChatModel):
    """Replies ``responder(prompt)``; counts tokens as whitespace-separated words."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    responder: Responder
    delay_s: float = 0.0
    # a sampled call's copy (ModelClient.sampled) has a temperature and a seed: a responder
    # ``seeded`` reads the seed too (None for a call at temperature 0); the copy shares the stats
    temperature: float = 0.0
    seed: int | None = None
    seeded: Callable[[str, int | None], str | tuple[str, str]] | None = None
    _stats: _Stats = PrivateAttr(default_factory=lambda: _Stats())

    @property
    def _llm_type(self) -> str:
        return "prompt-fake"

    @property
    def prompts(self) -> list[str]:
        with self._stats.lock:
            return list(self._stats.prompts)

    @property
    def max_in_flight(self) -> int:
        return self._stats.max_in_flight

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        prompt = prompt_text(messages)
        stats = self._stats
        with stats.lock:
            stats.prompts.append(prompt)
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            out = self.seeded(prompt, self.seed) if self.seeded is not None else self.responder(prompt)
        finally:
            with stats.lock:
                stats.in_flight -= 1
        # a responder may give (text, finish_reason): ("...", "length") is a reply cut at the token limit
        text, finish = out if isinstance(out, tuple) else (out, "stop")
        usage = {"input_tokens": len(prompt.split()), "output_tokens": len(text.split()),
                 "total_tokens": len(prompt.split()) + len(text.split())}
        message = AIMessage(content=text, usage_metadata=usage, response_metadata={"finish_reason": finish})  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


class FakeProvider:
    """A ModelProvider that hands out the two fakes."""

    def __init__(self, remote: PromptFake, local: PromptFake) -> None:
        self.fakes = {"remote": remote, "local": local}

    def client(self, spec: ModelSpec, role: Role, max_tokens: int) -> ModelClient:
        return ModelClient(spec, self.fakes[role], method="json_object_schema")


def bind(step: Callable[[Any, Any], Any], models: Any = None, sandbox: Any = None) -> Callable[[Any, Any], Any]:
    """``step`` as the node tests call it, ``(state, runtime)`` with a runtime that holds only
    the store: the call gets one ``RunContext`` of ``models`` and ``sandbox`` (one run: it
    keeps what the run read once), whose settings are the thread's (a context made with
    none takes the state's, or for a ``Send`` task the job batch's, as a served graph's
    context does)."""
    from langgraph.runtime import Runtime
    from minionflow.nodes.support.context import RunContext

    context = RunContext(models=models, sandbox=sandbox)
    return lambda state, runtime: step(state, Runtime(store=runtime.store, context=context))


def in_round(thread: str, fn: Callable[[Any, Any], Any], inp: Any, runtime: Any) -> Any:
    """Call the node ``fn`` as a task of round "round:r1" of ``thread``, with the config
    LangGraph gives a task (``round_key`` reads the thread and the round from it). It sets
    LangGraph's private runtime key: the one place the tests and the benchmarks do."""
    from langchain_core.runnables.config import var_child_runnable_config
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME

    config = {"configurable": {"thread_id": thread, "checkpoint_ns": "round:r1|parallel_minion_map:t1",
                               CONFIG_KEY_RUNTIME: runtime}}
    return contextvars.copy_context().run(lambda: (var_child_runnable_config.set(config), fn(inp, runtime))[1])  # type: ignore[arg-type]
