"""Errors: bad input for the user, and which failures of a model call are transient
(retried by a node's ``RetryPolicy``; a bad reply never is)."""

from __future__ import annotations

import sys

import httpx
from langgraph.types import RetryPolicy


class BadInput(ValueError):
    """Input that cannot be used; the message is one line meant for the user."""


# A server or gateway that says it is unavailable (the client already retried twice). A
# plain 500 is not here: llama.cpp servers answer 500 to a request they will never take.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (httpx.TransportError, ConnectionError)):
        return True
    # An openai error exists only once a model client has imported openai: looking it up
    # here, rather than importing it, keeps openai's 0.7 s out of every CLI start.
    openai = sys.modules.get("openai")
    if openai is None:
        return False
    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError)):
        return True  # RateLimitError (429) is an APIStatusError too
    return isinstance(exc, openai.APIStatusError) and exc.status_code in UNAVAILABLE_STATUSES


TRANSIENT_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=is_transient)
