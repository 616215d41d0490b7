"""The model factory: chat models from specs, structured output, and per-call records.

Both roles are LangChain chat models. Every endpoint is reached through
``langchain-openai``'s ``ChatOpenAI`` with a ``base_url``; the embedded model is
llama-cpp-python's server on 127.0.0.1. How structured output is requested is a
per-endpoint setting (servers differ: docs/architecture.md), and every reply is
validated with pydantic whatever the method.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.utils._gateway import GATEWAY_METADATA_RESPONSE_KEY
from langchain_core.utils.utils import LC_ID_PREFIX
from minionflow.contracts.errors import is_transient
from minionflow.contracts.settings import OPENAI_BASE_URL, ModelSpec, StructuredMethod
from pydantic import BaseModel, ValidationError

from .context_guard import ContextGuard, find_guard, is_llama_cpp
from .embedded import EmbeddedServer, embedded_server

log = logging.getLogger(__name__)

Role = Literal["remote", "local"]
T = TypeVar("T", bound=BaseModel)


class ModelConfigError(ValueError):
    """A model that cannot be used as configured (missing key, unreachable endpoint)."""


class EndpointUnreachable(ModelConfigError):
    """An endpoint that did not answer (it may come back; a pool's others can stand in)."""


@dataclass
class CallRecord:
    """One request to a model: the reply (with its usage) or the error."""

    message: AIMessage | None
    latency_s: float
    error: str | None = None
    messages: list[BaseMessage] = field(default_factory=list)  # what was sent
    tokens: tuple[int, int, int] | None = None  # usage of a failed call, when the server reported it
    cache_hit: bool = False  # answered from the job cache (serving.job_cache): no request was sent

    @property
    def usage(self) -> tuple[int, int, int]:
        if self.tokens is not None:
            return self.tokens
        meta = self.message.usage_metadata if self.message is not None else None
        if not meta:
            return 0, 0, 0
        cached = (meta.get("input_token_details") or {}).get("cache_read") or 0
        return int(meta.get("input_tokens") or 0), int(meta.get("output_tokens") or 0), int(cached)


@dataclass
class StructuredReply:
    parsed: BaseModel | None
    calls: list[CallRecord] = field(default_factory=list)
    error: str | None = None


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _truncated(message: AIMessage) -> bool:
    return (message.response_metadata or {}).get("finish_reason") == "length"


def cut_off(call: CallRecord) -> bool:
    """Whether the call's reply came back cut off at its token limit."""
    return call.message is not None and _truncated(call.message)


def parse_json_reply(text: str, schema: type[T]) -> T:
    """Validate a model's JSON reply, tolerating a Markdown fence around it and raw
    control characters (a newline) inside strings, which llama.cpp's JSON grammar lets
    through; anything else that is not the schema raises ValueError."""
    match = _FENCE.match(text)
    body = match.group(1) if match else text.strip()
    try:
        return schema.model_validate_json(body)
    except ValidationError:
        return schema.model_validate(json.loads(body, strict=False))


@cache
def json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a reply model (computing it costs ~0.5 ms: once per class)."""
    return schema.model_json_schema()


def unheard_here() -> bool:
    """Whether a chat model called here would reach no callback handler: none in the
    run's config (LangGraph puts one there for ``stream_mode="messages"``, Studio's
    token stream), no LangSmith tracing, no debug, no configure hook; decided by
    LangChain's own ``CallbackManager.configure``, as ``invoke`` decides it. It costs
    about what the configure in every ``invoke`` costs, so a node asks once for a task's
    jobs, not once a call."""
    from langchain_core.callbacks import CallbackManager
    from langchain_core.runnables import ensure_config

    return not CallbackManager.configure(ensure_config().get("callbacks")).handlers


def callable_direct(chat: BaseChatModel) -> bool:
    """Whether ``chat.invoke`` would do nothing for this model beyond ``_generate`` and
    shaping its reply, when no handler listens (``unheard_here``): no callbacks or
    verbosity of its own, no LLM cache, no rate limiter, no streaming, the default
    output format."""
    from langchain_core.globals import get_llm_cache

    return (not chat.callbacks and not chat.verbose and chat.rate_limiter is None
            and (chat.cache is False or (chat.cache is None and get_llm_cache() is None))
            and getattr(chat, "streaming", False) is not True and chat.output_version in (None, "v0"))


def call_direct(chat: BaseChatModel, messages: list[BaseMessage]) -> AIMessage:
    """The reply ``chat.invoke(messages)`` returns, without what ``invoke`` spends on
    callbacks no one listens to (``unheard_here``, ``callable_direct``): configuring a
    callback manager, reading ``_generate``'s signature, tracing metadata: about 0.3 ms a
    call of a zero-latency model, 0.5 ms of a job's framework time in a round of 1,000
    jobs (benchmarks/overhead.py). The reply is shaped as
    ``BaseChatModel._generate_with_cache`` shapes it (its id, its response metadata with
    the generation's info and the model's output); ``tests/test_openai_compatible.py``
    compares the two on ``ChatOpenAI`` over HTTP and on a fake."""
    result = chat._generate(messages)
    generation = result.generations[0]
    message = generation.message
    if not isinstance(message, AIMessage):
        raise TypeError(f"{type(chat).__name__} replied with a {type(message).__name__}, not an AIMessage")
    if message.id is None:
        message.id = f"{LC_ID_PREFIX}-{uuid.uuid4()}-0"
    info = {k: v for k, v in (generation.generation_info or {}).items() if k != GATEWAY_METADATA_RESPONSE_KEY}
    message.response_metadata = {**info, **message.response_metadata}
    if len(result.generations) == 1 and result.llm_output is not None:
        message.response_metadata = {**result.llm_output, **message.response_metadata}
    return message


def _is_format_rejection(exc: Exception) -> bool:
    """The server refused the response_format (llama-cpp-python answers 500 to json_schema);
    a server that says it is unavailable (502-504) refused nothing: it is retried as it is."""
    import openai  # imported by the model client already; kept out of the CLI's start

    return (isinstance(exc, (openai.BadRequestError, openai.InternalServerError, openai.UnprocessableEntityError))
            and not is_transient(exc))


class Sampling(NamedTuple):
    """A sampled call (the paper's samples per task): its temperature and seed. Calls are
    otherwise made at temperature 0; a seed makes a sample repeatable on a server that
    honours it (llama.cpp, vLLM, OpenAI as far as it can)."""

    temperature: float
    seed: int


class ModelClient:
    """A chat model plus how to get validated structured output from it."""

    def __init__(self, spec: ModelSpec, chat: BaseChatModel, method: StructuredMethod | None = None,
                 ensure_ready: Callable[[], object] | None = None) -> None:
        self.spec = spec
        self.chat = chat
        # called before every request: restarts the embedded server if it died
        self.ensure_ready = ensure_ready or (lambda: None)
        self.method: StructuredMethod = method or spec.structured
        self._lock = threading.Lock()
        self._guard_lock = threading.Lock()
        self._guard: tuple[ContextGuard | None] | None = None
        self._sampled: dict[Sampling, BaseChatModel] = {}

    def sampled(self, sampling: Sampling | None) -> BaseChatModel:
        """The chat model at the sampling's temperature and seed (the model itself for
        None): a copy with those fields, made once per sampling. A model without them
        cannot sample: ValueError."""
        if sampling is None:
            return self.chat
        with self._lock:
            if sampling not in self._sampled:
                fields = type(self.chat).model_fields
                if "temperature" not in fields or "seed" not in fields:
                    raise ValueError(f"{self.name} takes no temperature and seed: it cannot give several samples "
                                     "of a job (samples=1)")
                self._sampled[sampling] = self.chat.model_copy(update={"temperature": sampling.temperature,
                                                                       "seed": sampling.seed})
            return self._sampled[sampling]

    @property
    def name(self) -> str:
        return self.spec.label

    def context_guard(self) -> ContextGuard | None:
        """The model's context window and how to count against it (None when unknown),
        found on first use: from the spec, else from the server (serving.context_guard)."""
        with self._guard_lock:
            if self._guard is None:
                self.ensure_ready()
                base_url = getattr(self.chat, "openai_api_base", None)
                self._guard = (find_guard(self.spec, base_url if isinstance(base_url, str) else None),)
            return self._guard[0]

    def probe(self, timeout_s: float = 2.0) -> bool:
        """Whether the endpoint answers (``GET /models``); an embedded server that died is
        started again first. Used to bring a pool's failed endpoint back (serving.pool)."""
        try:
            self.ensure_ready()
            base_url = getattr(self.chat, "openai_api_base", None)
            if not isinstance(base_url, str):
                return True
            return httpx.get(f"{base_url.rstrip('/')}/models", timeout=timeout_s).status_code < 500
        except Exception:  # noqa: BLE001 - any failure means: not back yet
            return False

    def text(self, messages: list[BaseMessage], unheard: bool = False, sampling: Sampling | None = None) -> CallRecord:
        """One plain call. A transport error is raised (the node's RetryPolicy retries
        it); any other failure is returned as a recorded error. ``unheard``: the caller
        found that no callback handler listens where it runs (``unheard_here``), so a
        model that needs nothing else of ``invoke`` is called directly (``call_direct``).
        ``sampling``: a sampled call (``sampled``) instead of one at temperature 0."""
        self.ensure_ready()
        chat = self.sampled(sampling)
        started = time.monotonic()
        try:
            message = call_direct(chat, messages) if unheard and callable_direct(chat) else chat.invoke(messages)
        except Exception as exc:  # noqa: BLE001 - recorded, the caller decides
            if is_transient(exc):
                raise
            return CallRecord(None, time.monotonic() - started, f"{type(exc).__name__}: {exc}", messages)
        assert isinstance(message, AIMessage)
        error = "the reply was cut off at the token limit" if _truncated(message) else None
        return CallRecord(message, time.monotonic() - started, error, messages)

    def structured(self, schema: type[T], messages: list[BaseMessage], sampling: Sampling | None = None) -> StructuredReply:
        reply = StructuredReply(parsed=None)
        method = self.method
        if method == "auto":
            method = "json_schema"
        try:
            self._structured_once(schema, messages, method, reply, sampling)
        except Exception as exc:
            if self.method != "auto" or not _is_format_rejection(exc):
                raise
            log.warning("%s rejected response_format json_schema (%s); using json_object with a schema", self.name, exc)
            with self._lock:
                self.method = "json_object_schema"
            self._structured_once(schema, messages, "json_object_schema", reply, sampling)
        else:
            if self.method == "auto":
                with self._lock:
                    self.method = method
        return reply

    def _structured_once(self, schema: type[T], messages: list[BaseMessage], method: str, reply: StructuredReply,
                         sampling: Sampling | None = None) -> None:
        self.ensure_ready()
        chat = self.sampled(sampling)
        started = time.monotonic()
        try:
            if method == "json_object_schema":
                runnable = chat.bind(response_format={"type": "json_object", "schema": json_schema(schema)})
                message = runnable.invoke(messages)
            else:
                out = chat.with_structured_output(schema, method=method, include_raw=True).invoke(messages)  # type: ignore[arg-type]
                assert isinstance(out, dict)  # include_raw=True: {"raw", "parsed", "parsing_error"}
                message = out["raw"]
        except Exception as exc:
            cut = _cut_reply(exc)
            if cut is not None:  # the client raised on a reply cut at the limit: recorded as the reply it was
                reply.calls.append(CallRecord(cut, time.monotonic() - started, TRUNCATED_JSON, messages,
                                              tokens=_failed_usage(exc)))
                reply.error = TRUNCATED_JSON
                return
            reply.calls.append(CallRecord(None, time.monotonic() - started, f"{type(exc).__name__}: {exc}", messages,
                                          tokens=_failed_usage(exc)))
            if _is_format_rejection(exc) and self.method == "auto":
                raise
            if is_transient(exc):
                raise
            reply.error = f"model call failed: {type(exc).__name__}: {exc}"
            return
        latency = time.monotonic() - started
        assert isinstance(message, AIMessage)
        record = CallRecord(message, latency, None, messages)
        reply.calls.append(record)
        if _truncated(message):
            record.error = reply.error = TRUNCATED_JSON
            return
        try:
            reply.parsed = parse_json_reply(reply_text(message), schema)
        except (ValidationError, ValueError) as exc:
            record.error = reply.error = f"the reply does not match the {schema.__name__} schema: {_short(exc)}"


TRUNCATED_JSON = "the reply was cut off at the token limit (truncated JSON)"


def _cut_reply(exc: Exception) -> AIMessage | None:
    """The reply a structured-output client raised on because it was cut at the token limit
    (openai's ``LengthFinishReasonError``, json_schema): its text, marked as cut off."""
    import openai

    if not isinstance(exc, openai.LengthFinishReasonError) or not exc.completion.choices:
        return None
    return AIMessage(content=exc.completion.choices[0].message.content or "",
                     response_metadata={"finish_reason": "length"})


def _failed_usage(exc: Exception) -> tuple[int, int, int] | None:
    """Tokens a failed call still cost: a reply cut at the length limit was generated
    (and is billed) in full."""
    import openai

    if isinstance(exc, openai.LengthFinishReasonError) and exc.completion.usage is not None:
        usage = exc.completion.usage
        details = usage.prompt_tokens_details
        return usage.prompt_tokens, usage.completion_tokens, (details.cached_tokens or 0) if details else 0
    return None


def reply_text(message: AIMessage) -> str:
    """The JSON text of a reply: tool-call arguments (function calling) or the content."""
    if message.tool_calls:
        return json.dumps(message.tool_calls[0]["args"])
    content = message.content
    if isinstance(content, list):
        content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def _short(exc: Exception, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


@runtime_checkable
class ModelProvider(Protocol):
    """Where nodes get their models. Tests pass one that returns fakes."""

    def client(self, spec: ModelSpec, role: Role, max_tokens: int) -> ModelClient: ...


class DefaultModelProvider:
    """Builds ``ChatOpenAI`` clients (one per spec, role and token limit), starting the
    embedded server on first use."""

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[tuple[ModelSpec, Role, int], ModelClient] = {}
        self._lock = threading.Lock()

    def client(self, spec: ModelSpec, role: Role, max_tokens: int) -> ModelClient:
        key = (spec, role, max_tokens)
        with self._lock:
            if key in self._clients:
                return self._clients[key]
        # asked outside the lock: a server that is slow to answer holds up no other client
        llama = role == "local" and spec.kind != "embedded" and is_llama_cpp(spec.base_url or "")
        with self._lock:
            if key not in self._clients:
                ensure_ready = None
                if spec.kind == "embedded":
                    ensure_ready = _embedded(spec).start
                self._clients[key] = ModelClient(spec, self._chat(spec, max_tokens, llama), ensure_ready=ensure_ready)
            return self._clients[key]

    def _chat(self, spec: ModelSpec, max_tokens: int, llama_cpp: bool = False) -> BaseChatModel:
        from langchain_openai import ChatOpenAI

        if spec.kind == "embedded":
            base_url = _embedded(spec).start()
            api_key = "embedded"
        else:
            base_url = spec.base_url or ""
            api_key = resolve_api_key(spec) or "not-needed"
        # langchain-openai sends the limit as max_completion_tokens, which OpenAI wants
        # but llama-cpp-python's server ignores (it then generates up to the context
        # size): other servers also get the older max_tokens field.
        extra_body: dict[str, Any] | None = None if base_url.startswith(OPENAI_BASE_URL) else {"max_tokens": max_tokens}
        # llama.cpp's llama-server keeps a slot's prompt for the next request only when asked
        # (cache_prompt; the default in its later versions): the minions' jobs over one chunk
        # share their prompt up to the task (serving.pool runs them back to back). Found when
        # the client is made: a llama-server that was down then is not asked.
        if llama_cpp and extra_body is not None:
            extra_body["cache_prompt"] = True
        return ChatOpenAI(
            model=spec.model,
            base_url=base_url,
            api_key=api_key,  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=max_tokens,  # type: ignore[call-arg]
            extra_body=extra_body,
            timeout=self.timeout_s,
            max_retries=2,
            use_responses_api=False,
            stream_usage=True,
        )


def _embedded(spec: ModelSpec) -> EmbeddedServer:
    return embedded_server(spec.gguf_path, n_ctx=spec.context_window, replica=spec.replica, servers=spec.servers)


def resolve_api_key(spec: ModelSpec) -> str | None:
    if spec.api_key_env is None:
        return None
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise ModelConfigError(f"{spec.label} needs an API key: set the environment variable {spec.api_key_env}")
    return key


def preflight(spec: ModelSpec, role: Role, timeout_s: float = 5.0) -> None:
    """Fail fast, before any model call, on a missing key or an unreachable endpoint."""
    if spec.kind == "embedded":
        from .embedded import EmbeddedModelError, default_gguf

        try:
            path = spec.gguf_path or str(default_gguf())
        except EmbeddedModelError as exc:
            raise ModelConfigError(f"{role} model: {exc}") from exc
        if not os.path.isfile(path):
            raise ModelConfigError(f"{role} model: GGUF file not found: {path}")
        return
    resolve_api_key(spec)
    url = f"{spec.base_url}/models"
    try:
        httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise EndpointUnreachable(f"{role} model endpoint {spec.base_url} is unreachable: {type(exc).__name__}: {exc}") from exc


__all__ = [
    "CallRecord",
    "DefaultModelProvider",
    "EndpointUnreachable",
    "ModelClient",
    "ModelConfigError",
    "ModelProvider",
    "Role",
    "Sampling",
    "StructuredReply",
    "cut_off",
    "parse_json_reply",
    "preflight",
    "resolve_api_key",
]
