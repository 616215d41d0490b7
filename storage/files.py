"""Files minionflow keeps in its cache folder (``contracts.settings.cache_dir``), written
whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(target: Path) -> Iterator[Path]:
    """A partial file beside ``target`` for the body to fill (itself, or a process it
    starts): when the body ends, it becomes ``target`` in one rename, so a reader, or
    another process doing the same at once, sees the old file or the whole new one;
    when the body raises, it is removed. OSError if the folder cannot be made or written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    try:
        yield Path(partial)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
