"""Content-addressed blobs (document and chunk texts, job lists, job results) in a
LangGraph store.

State holds sha256 references; text and per-job data are written once, whatever
the number of checkpoints (invariant 4: SqliteSaver writes the full state into
every checkpoint). The default persistent store is a SQLite file beside the
checkpoint database; any LangGraph ``BaseStore`` works (in-memory for tests,
PostgreSQL for teams).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from langgraph.store.base import BaseStore

BLOB_NAMESPACE = ("minionflow", "blobs")


class MissingBlob(LookupError):
    pass


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def put_text(store: BaseStore, text: str) -> str:
    digest = sha256_text(text)
    if store.get(BLOB_NAMESPACE, digest) is None:
        store.put(BLOB_NAMESPACE, digest, {"text": text}, index=False)
    return digest


def get_text(store: BaseStore, digest: str) -> str:
    item = store.get(BLOB_NAMESPACE, digest)
    if item is None:
        raise MissingBlob(f"blob {digest[:12]} is not in the blob store (was the run started with another store?)")
    text = item.value["text"]
    if sha256_text(text) != digest:
        raise MissingBlob(f"blob {digest[:12]} in the blob store is corrupt (hash mismatch)")
    return str(text)


def put_json(store: BaseStore, value: Any) -> str:
    return put_text(store, json.dumps(value, sort_keys=True, separators=(",", ":")))


def get_json(store: BaseStore, digest: str) -> Any:
    return json.loads(get_text(store, digest))
