"""Converters from three public QA datasets to an eval suite (``evaluation.suite``).

Each converter reads the dataset's files as they are downloaded (nothing is fetched)
and writes ``out_dir/suite.jsonl`` plus whatever documents it had to write. Items are
written sorted by id, so the same input always gives the same suite. Every problem
with the input is a one-line ``BadInput`` naming the file. Entry point: ``convert``.

FinanceBench (github.com/patronus-ai/financebench)
    ``source``: ``financebench_open_source.jsonl``, one question a line
    (``financebench_id``, ``company``, ``doc_name``, ``question_type``,
    ``question_reasoning``, ``question``, ``answer``, ``evidence``, ...).
    ``pdfs``: the folder of ``<doc_name>.pdf`` (default: a ``pdfs`` folder next to
    the JSONL or one level up, as in the repository). The PDFs are referenced by a
    path relative to the suite, not copied. Rules:

    - id = ``financebench_id``; documents = the question's PDF.
    - ``match: numeric`` when the answer is one number and nothing else ("$1577.00",
      "65.4%", "-0.02", "1,577", optionally a scale word: "$2.5 billion");
      otherwise ``contains`` with the whole answer.
    - tags: ``question_type``, ``question_reasoning`` and ``company`` when present.
    - a question whose PDF is missing (or is not a PDF) is skipped and counted;
      if none is left the conversion is refused.

QASPER (allenai.org/data/qasper, ``qasper-{train,dev,test}-v0.3.json``)
    ``source``: a JSON object ``paper id -> {title, abstract, full_text:
    [{section_name, paragraphs}], qas: [{question, question_id, answers:
    [{answer: {unanswerable, extractive_spans, yes_no, free_form_answer, evidence,
    highlighted_evidence}, ...}]}], figures_and_tables: [{caption, file}]}``.
    Each paper becomes ``papers/<paper id>.md``: the title as ``#``, the abstract
    and each section as ``##`` (a ``A ::: B`` section name is a subsection ``### B``),
    paragraphs separated by blank lines, figure and table captions at the end.
    Each annotation is read as one kind, in this order: unanswerable, yes/no
    (``yes_no`` is not null), extractive (non-empty ``extractive_spans``),
    abstractive (non-empty ``free_form_answer``); an annotation with none of these
    is ignored. Then:

    - every annotation unanswerable -> ``match: abstain`` (no answers);
    - otherwise unanswerable annotations are outvoted by any answer; the question's
      kind is the most common kind among the answering annotations (a tie goes to
      yes/no, then extractive, then abstractive);
    - yes/no -> ``"Yes"`` or ``"No"`` by majority, ``match: exact``; a tie is
      skipped;
    - extractive, when the first extractive annotation has several spans ->
      ``match: all`` with each of its spans a required part;
    - otherwise (one span, or abstractive) -> ``match: contains`` whose acceptable
      answers are every single-span extraction and every free-form answer of the
      annotators (distinct, in annotator order, the question's kind first);
    - a question without any usable annotation is skipped.

    id = ``question_id``; tags: ``qasper``, the kind (``unanswerable``, ``yes-no``,
    ``extractive``, ``multi-span``, ``abstractive``) and ``annotators-disagree``
    when the annotations are not all of one kind and value.

LongHealth (github.com/kbressem/LongHealth, ``data/benchmark_v5.json``)
    ``source``: a JSON object ``patient id -> {name, birthday, diagnosis, texts:
    {text_0: ..., ...}, questions: [{No, question, answer_a ... answer_e, correct,
    answer_location}]}`` where ``correct`` is the text of the right option.
    Each patient becomes one document, ``patients/<patient id>.md``, holding all of
    the patient's texts in order (``## text_0``, ``## text_1``, ...): LongHealth
    asks each question over all of a patient's documents. The question carries
    the five options (``A: ...`` to ``E: ...``) so it is answerable as multiple
    choice; the acceptable answer is the correct option's text (``contains``).
    id = ``<patient id>-q<No>``; tags: ``longhealth``, the patient id, and
    ``option-overlap`` when the correct text is part of another option (a
    ``contains`` match cannot tell them apart). A ``correct`` that is none of the
    options (nor one of the letters A-E) is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from minionflow.contracts.errors import BadInput
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .matchers import contains
from .suite import Match, SuiteItem, write_suite

log = logging.getLogger(__name__)

Kind = Literal["financebench", "qasper", "longhealth"]
KINDS: tuple[str, ...] = ("financebench", "qasper", "longhealth")
SUITE_FILE = "suite.jsonl"


class ConvertReport(BaseModel):
    """What a conversion wrote."""

    kind: Kind
    suite: Path
    items: int
    documents: int = Field(description="documents written (FinanceBench references its PDFs instead)")
    skipped: dict[str, int] = Field(default_factory=dict, description="questions left out, by reason")

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        text = f"{self.kind}: {self.items} questions, {self.documents} documents written to {self.suite}"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            text += f"; skipped {self.skipped_total} ({reasons})"
        return text


@dataclass
class _Converted:
    """A converter's result before writing: the items and the documents they need."""

    items: list[SuiteItem]
    documents: dict[str, str] = field(default_factory=dict)  # path relative to out_dir -> text
    skipped: Counter[str] = field(default_factory=Counter)


# --- reading the input -----------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    if not path.exists():
        raise BadInput(f"{path}: no such file (expected the {what})")
    if not path.is_file():
        raise BadInput(f"{path}: not a regular file (expected the {what})")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    text = _read_text(path, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object (the {what}), got a JSON {_json_type(data)}")
    if not data:
        raise BadInput(f"{path}: the {what} is empty")
    return data


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = "is required" if first["type"] == "missing" else str(first["msg"]).removeprefix("Value error, ")
    message = " ".join(message.split())
    return f"{where}: {message}" if where else message


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: Any, path: Path, where: str) -> M:
    if not isinstance(data, dict):
        raise BadInput(f"{path}: {where}: expected a JSON object, got a JSON {_json_type(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadInput(f"{path}: {where}: {_validation_message(exc)}") from None


def _safe_names(keys: Iterable[str]) -> dict[str, str]:
    """A file-name stem for each key: its characters outside ``[A-Za-z0-9._-]`` become
    ``_``, and a clash gets a numeric suffix."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for key in sorted(keys):
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "document"
        name, n = base, 2
        while name.lower() in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name.lower())
        names[key] = name
    return names


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- FinanceBench ----------------------------------------------------------------------


class FinanceBenchRecord(BaseModel):
    """One line of ``financebench_open_source.jsonl`` (only the fields used)."""

    model_config = ConfigDict(extra="ignore")

    financebench_id: str = Field(min_length=1)
    doc_name: str = Field(min_length=1)
    question: str
    answer: str
    company: str | None = None
    question_type: str | None = None
    question_reasoning: str | None = None
    evidence: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("financebench_id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("doc_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value.startswith(".") or value != value.strip():
            raise ValueError("must be a plain document name (no folders)")
        return value


# One number and nothing else: sign, currency, thousands separators, decimals, a
# percent sign or a scale word, and a final full stop.
_ONE_NUMBER = re.compile(
    r"[-\u2212+]?\s?(?:[$€£]|usd\s?)?\s?[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
    r"\s?(?:%|percent|thousand|million|billion|trillion|mn|bn)?\.?",
    re.IGNORECASE,
)


def is_one_number(answer: str) -> bool:
    """True when the answer is essentially one number ("$1577.00", "65.4%", "-0.02")."""
    return _ONE_NUMBER.fullmatch(answer.strip()) is not None


def _find_pdfs(source: Path, pdfs: Path | None) -> Path:
    if pdfs is not None:
        if not pdfs.is_dir():
            raise BadInput(f"{pdfs}: no such folder (expected the FinanceBench PDFs folder, pdfs/<doc_name>.pdf)")
        return pdfs
    candidates = [source.parent / "pdfs", source.parent.parent / "pdfs"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise BadInput(f"{source}: no FinanceBench PDFs folder found (looked for {looked}); pass pdfs=<folder>")


def _is_pdf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(5) == b"%PDF-"
    except OSError:
        return False


def _relative(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows): a path the suite can still resolve
        return target.resolve().as_posix()


def convert_financebench(source: Path, out_dir: Path, pdfs: Path | None = None) -> _Converted:
    text = _read_text(source, "FinanceBench JSONL (financebench_open_source.jsonl)")
    folder = _find_pdfs(source, pdfs)
    records: list[FinanceBenchRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{source}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        records.append(_validate(FinanceBenchRecord, data, source, f"line {number}"))
    if not records:
        raise BadInput(f"{source}: no questions (expected one JSON object a line)")

    items: list[SuiteItem] = []
    skipped: Counter[str] = Counter()
    missing: set[str] = set()
    seen: set[str] = set()
    for record in records:
        if record.financebench_id in seen:
            raise BadInput(f"{source}: financebench_id {record.financebench_id!r} appears twice")
        seen.add(record.financebench_id)
        pdf = folder / f"{record.doc_name}.pdf"
        if not pdf.is_file():
            skipped["pdf missing"] += 1
            missing.add(record.doc_name)
            continue
        if not _is_pdf(pdf):
            skipped["pdf unreadable"] += 1
            missing.add(record.doc_name)
            continue
        if not record.question.strip() or not record.answer.strip():
            skipped["blank question or answer"] += 1
            continue
        answer = record.answer.strip()
        match: Match = "numeric" if is_one_number(answer) else "contains"
        tags = [t.strip() for t in (record.question_type, record.question_reasoning, record.company) if t and t.strip()]
        items.append(SuiteItem(id=record.financebench_id, documents=[_relative(pdf, out_dir)], question=record.question,
                               answers=[answer], match=match, tags=tags))
    if missing:
        log.warning("FinanceBench: %d document(s) missing or unreadable in %s: %s", len(missing), folder,
                    ", ".join(sorted(missing)[:10]) + (" ..." if len(missing) > 10 else ""))
    if not items:
        raise BadInput(f"{source}: none of the {len(records)} questions has its PDF in {folder} (pdfs/<doc_name>.pdf)")
    return _Converted(items=items, skipped=skipped)


# --- QASPER ----------------------------------------------------------------------------


class QasperAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    unanswerable: bool = False
    extractive_spans: list[str] = Field(default_factory=list)
    yes_no: bool | None = None
    free_form_answer: str = ""
    evidence: list[str] = Field(default_factory=list)
    highlighted_evidence: list[str] = Field(default_factory=list)


class QasperAnnotation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    answer: QasperAnswer
    annotation_id: str | None = None
    worker_id: str | None = None


class QasperQuestion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str
    question_id: str = Field(min_length=1)
    answers: list[QasperAnnotation] = Field(default_factory=list)


class QasperSection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    section_name: str | None = None
    paragraphs: list[str | None] = Field(default_factory=list)


class QasperFigure(BaseModel):
    model_config = ConfigDict(extra="ignore")

    caption: str | None = None
    file: str | None = None


class QasperPaper(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str
    abstract: str = ""
    full_text: list[QasperSection]
    qas: list[QasperQuestion]
    figures_and_tables: list[QasperFigure] = Field(default_factory=list)


QasperKind = Literal["unanswerable", "yes-no", "extractive", "abstractive"]
_KIND_ORDER: tuple[QasperKind, ...] = ("yes-no", "extractive", "abstractive")


def _annotation_kind(answer: QasperAnswer) -> QasperKind | None:
    if answer.unanswerable:
        return "unanswerable"
    if answer.yes_no is not None:
        return "yes-no"
    if any(s.strip() for s in answer.extractive_spans):
        return "extractive"
    if answer.free_form_answer.strip():
        return "abstractive"
    return None


def _distinct(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        value = _one_line(value)
        if value and value.casefold() not in seen:
            seen.add(value.casefold())
            out.append(value)
    return out


def qasper_item(question: QasperQuestion, document: str) -> SuiteItem | str:
    """The suite item for one QASPER question, or the reason it is skipped."""
    annotations: list[tuple[QasperKind, QasperAnswer]] = []
    for annotation in question.answers:
        found = _annotation_kind(annotation.answer)
        if found is not None:
            annotations.append((found, annotation.answer))
    if not annotations:
        return "no usable annotation"
    kinds = Counter(kind for kind, _ in annotations)
    disagree = len(kinds) > 1

    def item(answers: list[str], match: Match, tags: list[str]) -> SuiteItem:
        return SuiteItem(id=question.question_id, documents=[document], question=question.question,
                         answers=list(answers), match=match, tags=tags)

    if set(kinds) == {"unanswerable"}:
        return item([], "abstain", ["qasper", "unanswerable"])
    answering = [(kind, answer) for kind, answer in annotations if kind != "unanswerable"]
    counts: Counter[str] = Counter(k for k, _ in answering)
    kind: QasperKind = max(_KIND_ORDER, key=lambda k: (counts[k], -_KIND_ORDER.index(k)))
    if kind == "yes-no":
        votes = Counter(bool(answer.yes_no) for k, answer in answering if k == "yes-no")
        if votes[True] == votes[False]:
            return "annotators disagree on yes/no"
        disagree = disagree or len(votes) > 1
        tags = ["qasper", "yes-no"] + (["annotators-disagree"] if disagree else [])
        return item(["Yes" if votes[True] > votes[False] else "No"], "exact", tags)
    if kind == "extractive":
        first = next(answer for k, answer in answering if k == "extractive")
        spans = _distinct(first.extractive_spans)
        if len(spans) > 1:
            tags = ["qasper", "multi-span"] + (["annotators-disagree"] if disagree else [])
            return item(spans, "all", tags)
    singles = [_one_line(s) for _, a in answering for s in a.extractive_spans if len(_distinct(a.extractive_spans)) == 1]
    free = [a.free_form_answer for k, a in answering if k == "abstractive"]
    answers = _distinct(singles + free if kind == "extractive" else free + singles)
    tags = ["qasper", str(kind)] + (["annotators-disagree"] if disagree or len(answers) > 1 else [])
    return item(answers, "contains", tags)


def _section_heading(name: str) -> str:
    parts = [p.strip() for p in name.split(":::") if p.strip()]
    if not parts:
        return ""
    level = min(2 + len(parts) - 1, 6)
    return "#" * level + " " + _one_line(parts[-1])


def qasper_markdown(paper: QasperPaper) -> str:
    """A paper as Markdown: title, abstract, sections as headings, captions."""
    lines = [f"# {_one_line(paper.title) or 'Untitled paper'}", ""]
    if paper.abstract.strip():
        lines += ["## Abstract", "", _one_line(paper.abstract), ""]
    for section in paper.full_text:
        heading = _section_heading(section.section_name or "")
        if heading:
            lines += [heading, ""]
        for paragraph in section.paragraphs:
            if paragraph and paragraph.strip():
                lines += [_one_line(paragraph), ""]
    captions = [_one_line(f.caption) for f in paper.figures_and_tables if f.caption and f.caption.strip()]
    if captions:
        lines += ["## Figures and tables", ""]
        for caption in captions:
            lines += [caption, ""]
    return "\n".join(lines).rstrip() + "\n"


def convert_qasper(source: Path, out_dir: Path, pdfs: Path | None = None) -> _Converted:
    del out_dir, pdfs
    raw = _read_json_object(source, "QASPER JSON (qasper-*-v0.3.json: paper id -> paper)")
    papers = {pid: _validate(QasperPaper, data, source, f"paper {pid!r}") for pid, data in raw.items()}
    names = _safe_names(papers)
    items: list[SuiteItem] = []
    documents: dict[str, str] = {}
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    for pid in sorted(papers):
        paper = papers[pid]
        document = f"papers/{names[pid]}.md"
        for question in paper.qas:
            if question.question_id in seen:
                raise BadInput(f"{source}: paper {pid!r}: question_id {question.question_id!r} appears twice")
            seen.add(question.question_id)
            if not question.question.strip():
                skipped["blank question"] += 1
                continue
            result = qasper_item(question, document)
            if isinstance(result, str):
                skipped[result] += 1
                continue
            items.append(result)
            documents[document] = ""
    if not items and not skipped:
        raise BadInput(f"{source}: no questions in any paper")
    for pid in papers:
        document = f"papers/{names[pid]}.md"
        if document in documents:
            documents[document] = qasper_markdown(papers[pid])
    return _Converted(items=items, documents=documents, skipped=skipped)


# --- LongHealth ------------------------------------------------------------------------


class LongHealthQuestion(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    number: int | str = Field(alias="No")
    question: str
    answer_a: str
    answer_b: str
    answer_c: str
    answer_d: str
    answer_e: str
    correct: str
    answer_location: dict[str, Any] | None = None

    @property
    def options(self) -> dict[str, str]:
        return {"A": self.answer_a, "B": self.answer_b, "C": self.answer_c, "D": self.answer_d, "E": self.answer_e}


class LongHealthPatient(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    birthday: str | None = None
    diagnosis: str | None = None
    texts: dict[str, str] = Field(min_length=1)
    questions: list[LongHealthQuestion]


def _text_order(key: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", key)
    return (int(m.group(1)) if m else 1 << 30, key)


def longhealth_markdown(patient_id: str, patient: LongHealthPatient) -> str:
    """All of a patient's texts, in order, each under its own heading."""
    keys = sorted(patient.texts, key=_text_order)
    lines = [f"# Clinical documents ({patient_id})", ""]
    for key in keys:
        body = patient.texts[key].replace("\r\n", "\n").strip()
        if body:
            lines += [f"## {key}", "", body, ""]
    return "\n".join(lines).rstrip() + "\n"


def _correct_letter(question: LongHealthQuestion) -> str | None:
    """The letter of the option whose text is ``correct`` (or ``correct`` as a letter)."""
    options = question.options
    want = _one_line(question.correct)
    for same in (lambda a, b: a == b, lambda a, b: a.casefold() == b.casefold()):
        for letter, text in options.items():
            if same(_one_line(text), want) and text.strip():
                return letter
    letter = want.rstrip(".):").upper()
    return letter if letter in options and options[letter].strip() else None


def longhealth_question(question: LongHealthQuestion) -> str:
    options = "\n".join(f"{letter}: {_one_line(text)}" for letter, text in question.options.items())
    return (f"{question.question.strip()}\n\nOptions:\n{options}\n\n"
            "Answer with the letter and the text of the one correct option.")


def _question_id(patient_id: str, number: int | str) -> str:
    text = str(number).strip()
    return f"{patient_id}-q{int(text):02d}" if text.isdigit() else f"{patient_id}-q{text}"


def convert_longhealth(source: Path, out_dir: Path, pdfs: Path | None = None) -> _Converted:
    del out_dir, pdfs
    raw = _read_json_object(source, "LongHealth JSON (benchmark_v5.json: patient id -> patient)")
    patients = {pid: _validate(LongHealthPatient, data, source, f"patient {pid!r}") for pid, data in raw.items()}
    names = _safe_names(patients)
    items: list[SuiteItem] = []
    documents: dict[str, str] = {}
    skipped: Counter[str] = Counter()
    for pid in sorted(patients):
        patient = patients[pid]
        document = f"patients/{names[pid]}.md"
        if not any(t.strip() for t in patient.texts.values()):
            raise BadInput(f"{source}: patient {pid!r}: texts are all blank")
        for question in patient.questions:
            qid = _question_id(pid, question.number)
            if not question.question.strip():
                skipped["blank question"] += 1
                continue
            letter = _correct_letter(question)
            if letter is None:
                skipped["correct answer is not one of the options"] += 1
                log.debug("LongHealth %s: correct %r is none of the options", qid, question.correct)
                continue
            answer = _one_line(question.options[letter])
            overlap = any(other != letter and contains(text, answer) for other, text in question.options.items())
            tags = ["longhealth", pid] + (["option-overlap"] if overlap else [])
            items.append(SuiteItem(id=qid, documents=[document], question=longhealth_question(question),
                                   answers=[answer], match="contains", tags=tags))
            documents[document] = ""
    if not items and not skipped:
        raise BadInput(f"{source}: no questions for any patient")
    for pid in patients:
        document = f"patients/{names[pid]}.md"
        if document in documents:
            documents[document] = longhealth_markdown(pid, patients[pid])
    return _Converted(items=items, documents=documents, skipped=skipped)


# --- entry point -----------------------------------------------------------------------

_CONVERTERS: dict[str, Callable[[Path, Path, Path | None], _Converted]] = {
    "financebench": convert_financebench,
    "qasper": convert_qasper,
    "longhealth": convert_longhealth,
}


def convert(kind: Kind, source: Path, out_dir: Path, *, pdfs: Path | None = None, limit: int | None = None,
            overwrite: bool = False) -> ConvertReport:
    """Convert a downloaded dataset to ``out_dir/suite.jsonl`` (plus its documents).

    ``limit`` keeps the first questions by id (only their documents are written).
    An existing non-empty ``suite.jsonl`` in ``out_dir`` is kept unless ``overwrite``.
    """
    if kind not in _CONVERTERS:
        raise BadInput(f"unknown dataset {kind!r}; use one of {', '.join(KINDS)}")
    if limit is not None and limit < 1:
        raise BadInput(f"limit must be at least 1 (got {limit})")
    source, out_dir = Path(source), Path(out_dir)
    if pdfs is not None and kind != "financebench":
        raise BadInput(f"{pdfs}: a PDFs folder is only used for financebench, not {kind}")
    suite_path = out_dir / SUITE_FILE
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir}: not a folder (the output folder for the suite)")
    if suite_path.is_file() and suite_path.stat().st_size > 0 and not overwrite:
        raise BadInput(f"{suite_path}: already exists; pass overwrite=True (--overwrite) to replace it")

    converted = _CONVERTERS[kind](source, out_dir, None if pdfs is None else Path(pdfs))
    items = sorted(converted.items, key=lambda item: item.id)
    if not items:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(converted.skipped.items()))
        raise BadInput(f"{source}: no question could be converted ({reasons})")
    if limit is not None:
        items = items[:limit]
    needed = sorted({d for item in items for d in item.documents if d in converted.documents})

    out_dir.mkdir(parents=True, exist_ok=True)
    for relative in needed:
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(converted.documents[relative], encoding="utf-8")
    partial = suite_path.with_name(SUITE_FILE + ".partial")
    written = write_suite(partial, items)
    os.replace(partial, suite_path)

    report = ConvertReport(kind=kind, suite=suite_path, items=written, documents=len(needed),
                           skipped=dict(sorted(converted.skipped.items())))
    log.info("%s", report.summary())
    return report
