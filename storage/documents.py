"""Loading documents (.txt, .md, .pdf) with clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

from minionflow.contracts.errors import BadInput
from minionflow.sandbox.chunking import PAGE_BREAK
from pydantic import BaseModel

SUPPORTED = {".txt", ".md", ".markdown", ".pdf"}


class LoadedDocument(BaseModel):
    """A document as a run takes it: its title, its text and its page count (1 for text)."""

    title: str
    text: str
    pages: int


def load_document(path: str | Path) -> LoadedDocument:
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file")
    if not p.is_file():
        raise BadInput(f"{p}: not a regular file")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED:
        raise BadInput(f"{p}: unsupported file type {suffix or '(none)'}; use .txt, .md or .pdf")
    if p.stat().st_size == 0:
        raise BadInput(f"{p}: the file is empty")
    text, pages = _read_pdf(p) if suffix == ".pdf" else (_read_text(p), 1)
    if not text.strip():
        raise BadInput(f"{p}: the document has no text" + (" (a scanned PDF needs OCR first)" if suffix == ".pdf" else ""))
    return LoadedDocument(title=p.name, text=text, pages=pages)


def _read_text(p: Path) -> str:
    data = p.read_bytes()
    if b"\x00" in data[:8192]:
        raise BadInput(f"{p}: this looks like a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{p}: not valid UTF-8 text (byte {exc.start}); convert it to UTF-8 first") from None
    return text.replace("\r\n", "\n")


def _read_pdf(p: Path) -> tuple[str, int]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(p))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise BadInput(f"{p}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    return PAGE_BREAK.join(pages), len(pages)
