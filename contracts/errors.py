"""Errors: bad input for the user, and which failures of a model call are transient
(retried by a node's ``RetryPolicy``; a bad reply never is)."""

from __future__ import annotations

import httpx
import openai
from langgraph.types import RetryPolicy


class BadInput(ValueError):
    """Input that cannot be used; the message is one line meant for the user."""


TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, httpx.TransportError, ConnectionError,
)
# A server or gateway that says it is unavailable (the client already retried twice). A
# plain 500 is not here: llama.cpp servers answer 500 to a request they will never take.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):  # RateLimitError (429) is an APIStatusError too
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in UNAVAILABLE_STATUSES


TRANSIENT_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=is_transient)
