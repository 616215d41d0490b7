"""retrieve (a composition example): rank the documents' chunks against the task
with BM25 and keep only the best, before the supervisor plans the jobs. Put it in
front of ``decompose`` and the minions read the top chunks only: fewer local calls
on long documents, at the risk of missing what BM25 ranks low.

    builder = minions_builder(prelude=[("retrieve", make_bm25_prefilter(top_k=8))])
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime
from minionflow.contracts.events import emit
from minionflow.contracts.state import DocumentRef, MinionsState
from minionflow.nodes.support.common import document_texts
from minionflow.nodes.support.context import context_of, store_of
from minionflow.sandbox.chunking import chunk_by_tokens
from minionflow.storage.store import put_text

SKIPPED = "\n\n[...]\n\n"
_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def top_chunks(task: str, chunks: list[str], top_k: int) -> list[int]:
    """Indices of the ``top_k`` chunks BM25 ranks highest for the task, in document order."""
    if len(chunks) <= top_k:
        return list(range(len(chunks)))
    from rank_bm25 import BM25Okapi  # imports numpy: only when a graph retrieves

    scores = BM25Okapi([tokenize(c) or [""] for c in chunks]).get_scores(tokenize(task))
    best = sorted(range(len(chunks)), key=lambda i: (-scores[i], i))[:top_k]
    return sorted(best)


def make_bm25_prefilter(top_k: int = 8) -> Callable[[MinionsState, Runtime[Any]], dict[str, Any]]:
    if top_k < 1:
        raise ValueError("top_k must be at least 1")

    def retrieve(state: MinionsState, runtime: Runtime[Any]) -> dict[str, Any]:
        settings = context_of(runtime, state).run_settings
        store = store_of(runtime)
        originals = state.get("source_documents") or state["documents"]
        texts = document_texts(store, originals)
        # one ranking over every document's chunks: the best chunks wherever they are
        pieces = [(doc, chunk) for doc, text in zip(originals, texts, strict=True)
                  for chunk in chunk_by_tokens(text, max_tokens=settings.chunk_tokens)]
        keep = set(top_chunks(state["task"], [chunk for _, chunk in pieces], top_k))
        reduced: list[DocumentRef] = []
        for doc in originals:
            kept = [chunk for i, (d, chunk) in enumerate(pieces) if d is doc and i in keep]
            if kept:
                text = SKIPPED.join(kept)
                reduced.append(DocumentRef(sha256=put_text(store, text), title=f"{doc['title']} (retrieved)",
                                           chars=len(text), pages=doc["pages"]))
        emit({"type": "retrieve", "kept": len(keep), "chunks": len(pieces)})
        return {
            "source_documents": originals, "documents": reduced,
            "notes": [f"retrieval (BM25) kept the {len(keep)} best of {len(pieces)} chunks for the minions"],
        }

    return retrieve
