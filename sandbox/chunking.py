"""Chunking helpers: stdlib only.

The same source is used on the host (the built-in fallback plan) and inside the
sandbox, where the supervisor's ``prepare_jobs`` code calls these functions. They
must therefore import nothing outside the standard library.

Token counts here are an estimate (about four characters per token, the usual
rule for English with GPT-style tokenizers): the sandbox has no tokenizer, and
the estimate only has to keep chunks within a local model's context window.
"""

from __future__ import annotations

import re

CHARS_PER_TOKEN = 4
PAGE_BREAK = "\f"

_HEADING = re.compile(
    r"^(?:#{1,6}\s+\S.*|[A-Z][A-Z0-9 ,.&'()/-]{3,80}|(?:PART|ITEM|SECTION|CHAPTER|Item|Section|Chapter|Part)\s+[0-9IVXLC]+[A-Za-z]?[.:]?(?:\s.*)?)\s*$"
)


def estimate_tokens(text: str) -> int:
    """Rough token count: one token per four characters."""
    return max(len(text) // CHARS_PER_TOKEN, 1) if text else 0


def _pack(pieces: list[str], max_chars: int, sep: str) -> list[str]:
    """Greedily join consecutive pieces into chunks of at most ``max_chars``.

    A single piece longer than ``max_chars`` is split on whitespace (or hard,
    when it has none) so that no chunk exceeds the limit.
    """
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        for part in _split_long(piece, max_chars):
            if not current:
                current = part
            elif len(current) + len(sep) + len(part) <= max_chars:
                current = current + sep + part
            else:
                chunks.append(current)
                current = part
    if current.strip():
        chunks.append(current)
    return [c for c in chunks if c.strip()]


def _split_long(text: str, max_chars: int) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    parts: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + max_chars // 2, end)
            if cut > start:
                end = cut
        parts.append(text[start:end].strip())
        start = end
    return [p for p in parts if p]


def chunk_by_tokens(doc: str, max_tokens: int = 1000, overlap_tokens: int = 0) -> list[str]:
    """Split ``doc`` into chunks of about ``max_tokens`` tokens, on paragraph and
    word boundaries where possible, with an optional overlap between chunks."""
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    max_chars = max_tokens * CHARS_PER_TOKEN
    chunks = _pack(_paragraphs(doc), max_chars, "\n\n")
    if overlap_tokens <= 0 or len(chunks) < 2:
        return chunks
    overlap_chars = overlap_tokens * CHARS_PER_TOKEN
    out = [chunks[0]]
    for prev, chunk in zip(chunks, chunks[1:], strict=False):
        tail = prev[-overlap_chars:]
        cut = tail.find(" ")
        out.append((tail[cut + 1 :] if cut >= 0 else tail) + " " + chunk)
    return out


def _paragraphs(doc: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n|" + PAGE_BREAK, doc) if p.strip()]


def chunk_by_paragraph(doc: str, max_tokens: int = 1000) -> list[str]:
    """Paragraphs (blank-line separated), merged while they fit in ``max_tokens``."""
    return _pack(_paragraphs(doc), max_tokens * CHARS_PER_TOKEN, "\n\n")


def chunk_by_page(doc: str, pages_per_chunk: int = 1) -> list[str]:
    """Pages, split on form feeds (PDF text is stored with one form feed per page).

    A document without page breaks comes back as one chunk per 3,000 characters
    (about one printed page)."""
    if pages_per_chunk <= 0:
        raise ValueError("pages_per_chunk must be positive")
    pages = [p for p in doc.split(PAGE_BREAK) if p.strip()]
    if len(pages) <= 1:
        pages = _pack(_paragraphs(doc), 3000, "\n\n")
    return [
        "\n".join(pages[i : i + pages_per_chunk]).strip()
        for i in range(0, len(pages), pages_per_chunk)
    ]


def chunk_by_section(doc: str, max_tokens: int = 2000) -> list[str]:
    """Sections that start at headings (Markdown ``#`` lines, ALL-CAPS lines,
    "Item 7." / "Section 3" / "Chapter II" lines); a section longer than
    ``max_tokens`` is split further by paragraph."""
    sections: list[str] = []
    current: list[str] = []
    for line in doc.replace(PAGE_BREAK, "\n").splitlines():
        if _HEADING.match(line.strip()) and any(x.strip() for x in current):
            sections.append("\n".join(current).strip())
            current = []
        current.append(line)
    if any(x.strip() for x in current):
        sections.append("\n".join(current).strip())
    max_chars = max_tokens * CHARS_PER_TOKEN
    out: list[str] = []
    for section in sections:
        if len(section) <= max_chars:
            out.append(section)
        else:
            out.extend(_pack(_paragraphs(section), max_chars, "\n\n"))
    return out
