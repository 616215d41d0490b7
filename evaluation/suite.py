"""An eval suite: a JSONL file, one question per line.

Each line has ``id``, ``documents`` (paths relative to the suite file), ``question``
and ``answers`` (the acceptable answers; empty for a question that is only run,
not scored). Optional: ``match`` (how an answer is scored, see
``evaluation.matchers``), ``tolerance`` (relative, for ``numeric``; without it numbers
match at the precision they are written with) and ``tags``.

    {"id": "nw-01", "documents": ["report.md"], "question": "Which facility closed?",
     "answers": ["Duluth"], "match": "contains", "tags": ["single-fact"]}

With ``match: "all"`` every entry of ``answers`` is a part the answer must hold; an
entry may itself be a list of alternatives (``[["Duluth"], ["ammonia", "refrigeration"]]``).
With ``match: "abstain"`` the documents do not answer the question, and the right
answer says so (``answers`` stays empty).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from minionflow.contracts.errors import BadInput
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Match = Literal["contains", "exact", "numeric", "all", "abstain"]
MATCHES: tuple[str, ...] = ("contains", "exact", "numeric", "all", "abstain")

Answer = str | list[str]


class SuiteItem(BaseModel):
    """One question of a suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1)
    question: str = Field(min_length=1)
    answers: list[Answer]
    match: Match = "contains"
    tolerance: float | None = Field(None, gt=0, lt=1, description="relative tolerance of a numeric match (default: the precision the numbers are written with)")
    tags: list[str] = Field(default_factory=list)

    @field_validator("id", "question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("answers")
    @classmethod
    def _answers(cls, value: list[Answer]) -> list[Answer]:
        for answer in value:
            parts = [answer] if isinstance(answer, str) else answer
            if not parts or any(not p.strip() for p in parts):
                raise ValueError("an answer must not be blank (a list of alternatives must not be empty)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SuiteItem:
        if self.match == "abstain" and self.answers:
            raise ValueError("a question with match 'abstain' has no answers (the documents do not answer it)")
        if self.match != "all" and any(not isinstance(a, str) for a in self.answers):
            raise ValueError("lists of alternatives are only for match 'all'; list each acceptable answer as a string")
        return self

    @property
    def scored(self) -> bool:
        """False for a batch question: it is run and reported, not scored."""
        return bool(self.answers) or self.match == "abstain"


class Suite(BaseModel):
    """A loaded suite: its items and where its documents are."""

    path: Path
    items: list[SuiteItem]
    sha256: str  # of the file's bytes: an interrupted eval resumes only on the same suite

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def batch(self) -> bool:
        return not any(item.scored for item in self.items)

    def document_paths(self, item: SuiteItem) -> list[Path]:
        return [(self.path.parent / d).resolve() for d in item.documents]


def _error(path: Path, line: int, message: str) -> BadInput:
    return BadInput(f"{path}:{line}: {message}")


def parse_line(path: Path, number: int, line: str) -> SuiteItem:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _error(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise _error(path, number, f"expected a JSON object, got {type(data).__name__}")
    try:
        return SuiteItem.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "is required"
        elif first["type"] == "extra_forbidden":
            message = "is not a suite field (id, documents, question, answers, match, tolerance, tags)"
        elif where == "match":
            message = f"must be one of {', '.join(MATCHES)}"
        raise _error(path, number, f"{where}: {message}" if where else message) from None


def load_suite(path: str | Path, *, check_documents: bool = True) -> Suite:
    """Read and check a suite; every problem is a one-line ``BadInput`` naming the
    file and line. Blank lines and lines starting with ``//`` are skipped."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such suite file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{p}: not valid UTF-8 (byte {exc.start})") from None
    items: list[SuiteItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        item = parse_line(p, number, line)
        if item.id in seen:
            raise _error(p, number, f"id {item.id!r} is already used on line {seen[item.id]}")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise BadInput(f"{p}: the suite has no questions")
    suite = Suite(path=p.resolve(), items=items, sha256=hashlib.sha256(raw).hexdigest())
    if check_documents:
        for item in items:
            for doc, resolved in zip(item.documents, suite.document_paths(item), strict=True):
                if not resolved.is_file():
                    raise _error(p, seen[item.id], f"item {item.id!r}: document {doc!r} not found (looked for {resolved})")
    return suite


def write_suite(path: str | Path, items: Iterable[SuiteItem]) -> int:
    """Write items as a suite file (one JSON object per line); returns how many."""
    lines = [item.model_dump_json(exclude_defaults=True) for item in items]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
