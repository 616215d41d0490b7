"""The context guard: before a job is sent, its prompt is counted against the local
model's context window. A chunk whose prompt would not fit is split at sentence
boundaries into parts that do (``split_to_fit``); ``parallel_minion_map`` asks each part
and merges the outputs into the job's one result. A chunk that cannot be split to fit
(one sentence alone is too long) fails with the reason. Nothing is ever truncated:
llama.cpp refuses an oversized prompt, and Ollama silently cuts it at ``num_ctx``.

Where the window comes from: the embedded server (minionflow starts it with the
spec's window), ``;ctx=N`` in the spec, else what the server says (llama.cpp's
``/props``, Ollama's ``/api/show``). Where no source says, there is no token guard
(a hosted model's window is far above a chunk; ``max_chunk_chars`` still splits long
chunks). Counting is exact on a llama-cpp-python server (``/extras/tokenize/count``),
else tiktoken's count with a margin for another tokenizer."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from minionflow.contracts.settings import ModelSpec

from .tokens import count_tokens

log = logging.getLogger(__name__)

# Ollama's default num_ctx (older versions; newer ones default higher): assumed when
# /api/show answers without one
OLLAMA_DEFAULT_CTX = 2048
# what a chat template adds around the messages (role markers, special tokens)
TEMPLATE_TOKENS = 64
# tiktoken's count against a local model's own tokenizer, which may split finer
ESTIMATE_MARGIN = 1.25
# where a chunk may be cut: after a sentence end, or at a line end (a table row, a list item)
_CUT = re.compile(r"(?<=[.!?])[ \t]+|\n\s*")


class ContextOverflow(ValueError):
    """A chunk that cannot be split into parts that fit; the message says why."""


def tiktoken_estimate(text: str) -> int:
    return int(count_tokens(text) * ESTIMATE_MARGIN) + 1


@dataclass
class ContextGuard:
    """A local model's window and how to count tokens for it: ``count`` decides whether
    a prompt fits (exact where the server can count), ``estimate`` sizes the pieces of a
    chunk being split (offline, no request per sentence)."""

    window: int
    count: Callable[[str], int]
    exact: bool
    estimate: Callable[[str], int] = tiktoken_estimate

    def prompt_tokens(self, texts: list[str]) -> int:
        return self.count("\n".join(texts)) + TEMPLATE_TOKENS

    def fits(self, texts: list[str], max_tokens: int) -> bool:
        text = "\n".join(texts)
        # a token holds at least one byte: a prompt short in bytes fits without counting
        if len(text.encode()) * (1 if self.exact else ESTIMATE_MARGIN) + TEMPLATE_TOKENS + max_tokens <= self.window:
            return True
        return self.prompt_tokens(texts) + max_tokens <= self.window

    def require_fit(self, texts: list[str], max_tokens: int, what: str, advice: str) -> None:
        """ContextOverflow, before any call, when a prompt that cannot be split (a whole
        document) does not fit with its reply."""
        if not self.fits(texts, max_tokens):
            needed = self.prompt_tokens(texts) + max_tokens
            raise ContextOverflow(f"{what} needs about {needed:,} tokens with the prompt and the reply, and the local "
                                  f"model's context holds {self.window:,}; it is not sent cut: {advice}")

    def parts(self, chunk: str, prompt: Callable[[str], list[str]], max_tokens: int) -> list[str]:
        """``chunk`` whole when its prompt fits, else ``split_to_fit``."""
        if self.fits(prompt(chunk), max_tokens):
            return [chunk]
        return self.split_to_fit(chunk, prompt, max_tokens)

    def split_to_fit(self, chunk: str, prompt: Callable[[str], list[str]], max_tokens: int) -> list[str]:
        """``chunk`` in consecutive parts cut at sentence or line ends, each of whose
        prompts fits; the parts are slices of the chunk (``"".join(parts) == chunk``).
        ContextOverflow when one sentence alone does not fit."""
        overhead = self.prompt_tokens(prompt("")) + max_tokens
        room = self.window - overhead
        if room <= 0:
            raise ContextOverflow(f"the local model's context ({self.window:,} tokens) leaves no room for a chunk "
                                  f"after the prompt and the reply ({overhead:,} tokens)")
        parts: list[str] = []
        current, used = "", 0
        for piece in pieces(chunk):
            size = self.estimate(piece)
            if size > room:
                raise ContextOverflow(
                    f"the chunk does not fit the local model's context ({self.window:,} tokens, {room:,} of them for "
                    f"the chunk) and one of its sentences alone is about {size:,} tokens: it cannot be split at a "
                    "sentence boundary; make the chunks smaller (--chunk-tokens) or give the model a larger context")
            if current and used + size > room:
                parts.append(current)
                current, used = "", 0
            current += piece
            used += size
        if current or not parts:
            parts.append(current)
        # the estimate is not the model's count: check each part, and halve one that does not fit
        checked: list[str] = []
        for part in parts:
            if self.fits(prompt(part), max_tokens):
                checked.append(part)
            else:
                checked += [h for half in _halve(part) for h in self.split_to_fit(half, prompt, max_tokens)]
        return checked


def pieces(text: str) -> list[str]:
    """``text`` cut after each sentence end and at each line end, every character kept."""
    bounds = [0, *(m.end() for m in _CUT.finditer(text)), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def message_texts(messages: list[Any]) -> list[str]:
    """The text of chat messages, as the guard counts it."""
    return [str(m.content) for m in messages]


def _halve(text: str) -> list[str]:
    """Two halves of ``text`` at the cut nearest its middle (sentence or line end)."""
    ends = [m.end() for m in _CUT.finditer(text) if 0 < m.end() < len(text)]
    if not ends:
        raise ContextOverflow("a sentence of the chunk alone does not fit the local model's context; "
                              "make the chunks smaller (--chunk-tokens) or give the model a larger context")
    cut = min(ends, key=lambda e: abs(e - len(text) / 2))
    return [text[:cut], text[cut:]]


def _root(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1")


def server_window(spec: ModelSpec, base_url: str, timeout_s: float = 5.0) -> int | None:
    """The context window the server says it runs the model with, if it says."""
    root = _root(base_url)
    try:  # llama.cpp's own server
        reply = httpx.get(f"{root}/props", timeout=timeout_s)
        if reply.status_code == 200:
            n_ctx = (reply.json().get("default_generation_settings") or {}).get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                return n_ctx
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    try:  # Ollama: the model's num_ctx parameter (prompts beyond it are cut silently)
        reply = httpx.post(f"{root}/api/show", json={"model": spec.model}, timeout=timeout_s)
        if reply.status_code == 200:
            match = re.search(r"^num_ctx\s+(\d+)", reply.json().get("parameters") or "", re.MULTILINE)
            if match:
                return int(match.group(1))
            # a Modelfile that sets no num_ctx runs with the server's default, which /api/show
            # does not report: count against the smallest default Ollama has shipped
            log.warning("%s does not say its num_ctx; the context guard assumes Ollama's default of %s tokens "
                        "(state the real one with ;ctx=N)", spec.label, OLLAMA_DEFAULT_CTX)
            return OLLAMA_DEFAULT_CTX
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    return None


def is_llama_cpp(base_url: str, timeout_s: float = 2.0) -> bool:
    """Whether the server is llama.cpp's own (``llama-server``: ``GET /props`` answers
    with its generation settings)."""
    try:
        reply = httpx.get(f"{_root(base_url)}/props", timeout=timeout_s)
        return reply.status_code == 200 and isinstance(reply.json().get("default_generation_settings"), dict)
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def exact_counter(base_url: str, timeout_s: float = 10.0) -> Callable[[str], int] | None:
    """Exact token counts from a llama-cpp-python server, if this is one."""
    url = f"{_root(base_url)}/extras/tokenize/count"

    def count(text: str) -> int:
        return int(httpx.post(url, json={"input": text}, timeout=timeout_s).json()["count"])

    try:
        count("probe")
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return count


def find_guard(spec: ModelSpec, base_url: str | None) -> ContextGuard | None:
    """The guard for a local model, or None when its window is unknown. Each
    ``ModelClient`` finds its own once (``ModelClient.context_guard``)."""
    window = spec.context_window if spec.window_known else (server_window(spec, base_url) if base_url else None)
    if window is None:
        return None
    exact = exact_counter(base_url) if base_url else None
    log.info("context guard for %s: %s tokens (%s counts)", spec.label, window, "exact" if exact else "estimated")
    return ContextGuard(window=window, count=exact or tiktoken_estimate, exact=exact is not None)


__all__ = ["ContextGuard", "ContextOverflow", "exact_counter", "find_guard", "is_llama_cpp", "message_texts",
           "server_window"]
