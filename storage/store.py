"""Content-addressed blobs (document and chunk texts, job lists, job results) in a
LangGraph store.

State holds sha256 references; text and per-job data are written once, whatever
the number of checkpoints (docs/architecture.md, guarantee 4: SqliteSaver writes the full state into
every checkpoint). The default persistent store is a SQLite file beside the
checkpoint database; any LangGraph ``BaseStore`` works (in-memory for tests,
PostgreSQL for teams).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from langgraph.store.base import BaseStore, GetOp, Item, PutOp

BLOB_NAMESPACE = ("minionflow", "blobs")


class MissingBlob(LookupError):
    """A reference to a blob the store does not hold (or holds corrupt)."""


def sha256_text(text: str) -> str:
    """The reference of a text: the sha256 of its UTF-8 bytes, in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Rewriting a small blob costs less than asking whether it exists; a large one
# (a document, on every resume) is looked up first.
_CHECK_FIRST_CHARS = 64 * 1024


def put_text(store: BaseStore, text: str) -> str:
    """Store a text (once: its reference is its hash); its reference."""
    digest = sha256_text(text)
    if len(text) < _CHECK_FIRST_CHARS or store.get(BLOB_NAMESPACE, digest) is None:
        store.put(BLOB_NAMESPACE, digest, {"text": text}, index=False)
    return digest


def put_texts(store: BaseStore, texts: list[str]) -> list[str]:
    """Store many small texts in one batch (one transaction on SQL stores)."""
    digests = [sha256_text(t) for t in texts]
    unique = dict(zip(digests, texts, strict=True))
    store.batch([PutOp(BLOB_NAMESPACE, d, {"text": t}, index=False) for d, t in unique.items()])
    return digests


def _checked(item: Item | None, digest: str) -> str:
    if item is None:
        raise MissingBlob(f"blob {digest[:12]} is not in the blob store (was the run started with another store?)")
    text = item.value["text"]
    if sha256_text(text) != digest:
        raise MissingBlob(f"blob {digest[:12]} in the blob store is corrupt (hash mismatch)")
    return str(text)


def get_text(store: BaseStore, digest: str) -> str:
    """The text a reference names (a document, a chunk: ``JobRecord["chunk_ref"]``);
    MissingBlob if the store does not hold it."""
    return _checked(store.get(BLOB_NAMESPACE, digest), digest)


def get_texts(store: BaseStore, digests: list[str]) -> list[str]:
    """Read many text blobs in one batch."""
    items = store.batch([GetOp(BLOB_NAMESPACE, d) for d in digests])
    return [_checked(item, d) for item, d in zip(items, digests, strict=True)]  # type: ignore[arg-type]


def get_json_many(store: BaseStore, digests: list[str]) -> list[Any]:
    """Read many JSON blobs in one batch."""
    return [json.loads(text) for text in get_texts(store, digests)]


def json_text(value: Any) -> str:
    """The canonical JSON of a value (so equal values share one blob)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def put_json(store: BaseStore, value: Any) -> str:
    """Store a JSON value as a blob (its canonical JSON); its reference."""
    return put_text(store, json_text(value))


class BlobBatch:
    """Small blobs collected by a node and written in one store round trip (a job's
    result and its call transcripts: one transaction instead of four)."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}
        self._other: list[PutOp] = []  # entries of other namespaces written with the blobs (the job cache's)

    def text(self, text: str) -> str:
        digest = sha256_text(text)
        self._texts[digest] = text
        return digest

    def json(self, value: Any) -> str:
        return self.text(json_text(value))

    def put(self, namespace: tuple[str, ...], key: str, value: dict[str, Any]) -> None:
        self._other.append(PutOp(namespace, key, value, index=False))

    def write(self, store: BaseStore) -> None:
        if self._texts or self._other:
            store.batch([PutOp(BLOB_NAMESPACE, d, {"text": t}, index=False) for d, t in self._texts.items()] + self._other)
            self._texts.clear()
            self._other.clear()


def get_json(store: BaseStore, digest: str) -> Any:
    """The JSON value a reference names (a ``JobBatch``, a ``JobResult``, a list of them)."""
    return json.loads(get_text(store, digest))


__all__ = [
    "BLOB_NAMESPACE",
    "BlobBatch",
    "MissingBlob",
    "get_json",
    "get_json_many",
    "get_text",
    "get_texts",
    "json_text",
    "put_json",
    "put_text",
    "put_texts",
    "sha256_text",
]
