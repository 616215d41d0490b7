"""The dataset converters (FinanceBench, QASPER, LongHealth) on small fixtures in the
datasets' real formats (tests/fixtures/datasets/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from minionflow.contracts.errors import BadInput
from minionflow.evaluation.loaders import ConvertReport, convert, is_one_number
from minionflow.evaluation.matchers import is_correct
from minionflow.evaluation.suite import Suite, load_suite
from minionflow.storage.documents import load_document
from pdfgen import write_pdf

DATASETS = Path(__file__).parent / "fixtures" / "datasets"
FINANCEBENCH = DATASETS / "financebench" / "financebench_open_source.jsonl"
QASPER = DATASETS / "qasper" / "qasper-dev-v0.3.json"
LONGHEALTH = DATASETS / "longhealth" / "benchmark_v5.json"

# the fixture's questions whose PDFs the tests make; BOEING_2022_10K stays missing
PDF_PAGES = {
    "3M_2018_10K": ["3M Company 2018 Form 10-K", "Purchases of property, plant and equipment (PP&E) (1,577) (1,373) (1,420)"],
    "ADOBE_2022_10K": ["Adobe Inc. 2022 Form 10-K. Net cash provided by operating activities 7,838. Revenue 17,606."],
    "AMD_2022_10K": ["Advanced Micro Devices 2022 Form 10-K. Data Center net revenue increased 64%."],
}


def make_pdfs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, pages in PDF_PAGES.items():
        write_pdf(folder / f"{name}.pdf", pages)
    return folder


def check_written(report: ConvertReport) -> Suite:
    """The suite loads, every document resolves and loads, and the report adds up."""
    suite = load_suite(report.suite)
    assert len(suite.items) == report.items
    assert [item.id for item in suite.items] == sorted(item.id for item in suite.items)
    for item in suite.items:
        for path in suite.document_paths(item):
            assert path.is_file(), path
            assert load_document(path).text.strip()
    return suite


def by_id(suite: Suite) -> dict[str, dict[str, object]]:
    return {item.id: item.model_dump() for item in suite.items}


# --- FinanceBench ----------------------------------------------------------------------


def test_financebench(tmp_path: Path) -> None:
    pdfs = make_pdfs(tmp_path / "pdfs")
    out = tmp_path / "suites" / "financebench"
    report = convert("financebench", FINANCEBENCH, out, pdfs=pdfs)
    assert report.suite == out / "suite.jsonl"
    assert (report.items, report.documents, report.skipped) == (4, 0, {"pdf missing": 1})
    assert report.skipped_total == 1
    assert sorted(p.name for p in out.iterdir()) == ["suite.jsonl"]  # the PDFs are referenced, not copied

    suite = check_written(report)
    items = by_id(suite)
    assert list(items) == ["financebench_id_00222", "financebench_id_00499", "financebench_id_01865", "financebench_id_03029"]
    capex = items["financebench_id_03029"]
    assert capex["documents"] == ["../../pdfs/3M_2018_10K.pdf"]
    assert (capex["answers"], capex["match"]) == (["$1577.00"], "numeric")
    assert capex["tags"] == ["metrics-generated", "Information extraction", "3M"]
    assert (items["financebench_id_01865"]["answers"], items["financebench_id_01865"]["match"]) == (["65.4%"], "numeric")
    assert (items["financebench_id_00222"]["answers"], items["financebench_id_00222"]["match"]) == (["Data Center"], "contains")
    capital = items["financebench_id_00499"]
    assert capital["match"] == "contains"
    assert capital["tags"] == ["domain-relevant", "3M"]  # question_reasoning is null
    assert suite.document_paths(suite.items[3])[0] == (pdfs / "3M_2018_10K.pdf").resolve()
    assert "1,577" in load_document(suite.document_paths(suite.items[3])[0]).text

    # the numeric answers score as numbers
    item = {i.id: i for i in suite.items}["financebench_id_03029"]
    assert is_correct(item, "Capital expenditure was $1,577 million.")
    assert not is_correct(item, "Capital expenditure was $1,373 million.")


def test_financebench_finds_the_pdfs_folder_of_the_repository_layout(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    source = Path(shutil.copy(FINANCEBENCH, tmp_path / "data"))
    make_pdfs(tmp_path / "pdfs")
    report = convert("financebench", source, tmp_path / "out", limit=2)
    assert (report.items, report.skipped) == (2, {"pdf missing": 1})
    suite = check_written(report)
    assert [i.id for i in suite.items] == ["financebench_id_00222", "financebench_id_00499"]
    assert suite.items[0].documents == ["../pdfs/AMD_2022_10K.pdf"]


def test_financebench_without_pdfs(tmp_path: Path) -> None:
    source = Path(shutil.copy(FINANCEBENCH, tmp_path))
    with pytest.raises(BadInput) as exc:
        convert("financebench", source, tmp_path / "out")
    assert_one_line(exc.value, source)
    assert "pdfs" in str(exc.value)

    with pytest.raises(BadInput) as exc:
        convert("financebench", source, tmp_path / "out", pdfs=tmp_path / "nowhere")
    assert_one_line(exc.value, tmp_path / "nowhere")

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "3M_2018_10K.pdf").write_text("not a pdf")
    with pytest.raises(BadInput) as exc:
        convert("financebench", source, tmp_path / "out", pdfs=tmp_path / "empty")
    assert_one_line(exc.value, source)
    assert "none of the 5 questions" in str(exc.value)
    assert not (tmp_path / "out" / "suite.jsonl").exists()


@pytest.mark.parametrize(
    ("answer", "numeric"),
    [("$1577.00", True), ("65.4%", True), ("-0.02", True), ("0", True), ("1,577", True), ("$8.70", True),
     ("24.26", True), ("$2.5 billion", True), ("0.8.", True),
     ("Data Center", False), ("$400,000,000 increase.", False), ("AES has converted inventory 9.5 times in FY 2022.", False),
     ("Yes", False), ("1.9% and 2.1%", False)],
)
def test_one_number(answer: str, numeric: bool) -> None:
    assert is_one_number(answer) is numeric


# --- QASPER ----------------------------------------------------------------------------


def test_qasper(tmp_path: Path) -> None:
    out = tmp_path / "qasper"
    report = convert("qasper", QASPER, out)
    assert (report.items, report.documents) == (6, 2)
    assert report.skipped == {"annotators disagree on yes/no": 1, "no usable annotation": 1}
    suite = check_written(report)
    items = by_id(suite)
    assert list(items) == [
        "02e4bf719b1a504e385c35c6186742e720bcb281",
        "44c4bea6e76ee0a4d2e1e7cd5a2a10eb3e4e3c4d",
        "5a9d1d0f2b4a4d1d8c0a9e3a33d3a0f1b2c3d4e5",
        "753990d0b621d390ed58f20c4d9e4f065f0dc672",
        "9d578ddccc27dd849244d632dd0f6bf27348ad81",
        "b6a4ab009e6f213f011320155a7ce96e713c11cf",
    ]
    summary = {qid: (item["match"], item["answers"], item["tags"]) for qid, item in items.items()}
    # majority "No" over one "Yes"
    assert summary["02e4bf719b1a504e385c35c6186742e720bcb281"] == ("exact", ["No"], ["qasper", "yes-no", "annotators-disagree"])
    # every annotator: unanswerable
    assert summary["44c4bea6e76ee0a4d2e1e7cd5a2a10eb3e4e3c4d"] == ("abstain", [], ["qasper", "unanswerable"])
    # two spans: both are required
    assert summary["5a9d1d0f2b4a4d1d8c0a9e3a33d3a0f1b2c3d4e5"] == (
        "all", ["polarity function", "BiGRU encoder"], ["qasper", "multi-span"])
    # free-form (twice, the same) and a span: alternatives, the majority kind first
    assert summary["753990d0b621d390ed58f20c4d9e4f065f0dc672"] == (
        "contains", ["a vocabulary of positive and negative predicates", "seed lexicon of 15 positive and 15 negative predicates"],
        ["qasper", "abstractive", "annotators-disagree"])
    assert summary["9d578ddccc27dd849244d632dd0f6bf27348ad81"] == ("exact", ["Yes"], ["qasper", "yes-no"])
    # one annotator found no answer, the other a span: the span wins
    assert summary["b6a4ab009e6f213f011320155a7ce96e713c11cf"] == (
        "contains", ["158 poems"], ["qasper", "extractive", "annotators-disagree"])
    assert items["9d578ddccc27dd849244d632dd0f6bf27348ad81"]["question"] == "Do they use a BiGRU encoder?"
    assert items["b6a4ab009e6f213f011320155a7ce96e713c11cf"]["documents"] == ["papers/2003.07723.md"]
    assert sorted(p.name for p in (out / "papers").iterdir()) == ["1909.00694.md", "2003.07723.md"]

    paper = (out / "papers" / "1909.00694.md").read_text(encoding="utf-8")
    assert paper.startswith("# Minimally Supervised Learning of Affective Events Using Discourse Relations\n\n## Abstract\n\n")
    assert "\n## Introduction\n\nAffective events are events" in paper
    assert "\n## Proposed Method\n\n### Polarity Function\n\nThe polarity function maps" in paper
    assert "score in the range from -1 to 1. It is trained with a BiGRU encoder." in paper  # paragraph on one line
    assert "\n\nThe Japanese web corpus has about 100 million sentences.\n\n## Conclusion\n" in paper  # no section name
    other = (out / "papers" / "2003.07723.md").read_text(encoding="utf-8")
    assert "## Abstract" not in other  # empty abstract
    assert "### German" in other
    assert other.endswith("## Figures and tables\n\nTable 1: Emotion label counts in the German corpus.\n")

    # the written rules score as intended
    item = {i.id: i for i in suite.items}
    assert is_correct(item["5a9d1d0f2b4a4d1d8c0a9e3a33d3a0f1b2c3d4e5"], "A polarity function on a BiGRU encoder.")
    assert not is_correct(item["5a9d1d0f2b4a4d1d8c0a9e3a33d3a0f1b2c3d4e5"], "A BiGRU encoder.")
    assert is_correct(item["02e4bf719b1a504e385c35c6186742e720bcb281"], "No, only Japanese.")
    assert is_correct(item["44c4bea6e76ee0a4d2e1e7cd5a2a10eb3e4e3c4d"], "The paper does not mention it.")


def test_qasper_limit_writes_only_the_documents_it_needs(tmp_path: Path) -> None:
    report = convert("qasper", QASPER, tmp_path / "out", limit=3)
    assert (report.items, report.documents) == (3, 1)
    suite = check_written(report)
    assert {d for item in suite.items for d in item.documents} == {"papers/1909.00694.md"}
    assert [p.name for p in (tmp_path / "out" / "papers").iterdir()] == ["1909.00694.md"]


# --- LongHealth ------------------------------------------------------------------------


def test_longhealth(tmp_path: Path) -> None:
    out = tmp_path / "longhealth"
    report = convert("longhealth", LONGHEALTH, out)
    assert (report.items, report.documents) == (4, 2)
    assert report.skipped == {"correct answer is not one of the options": 1}
    suite = check_written(report)
    items = by_id(suite)
    assert list(items) == ["patient_01-q01", "patient_01-q02", "patient_01-q03", "patient_02-q01"]
    first = items["patient_01-q01"]
    assert first["documents"] == ["patients/patient_01.md"]
    assert (first["answers"], first["match"], first["tags"]) == (["Omnipaque 240"], "contains", ["longhealth", "patient_01"])
    assert first["question"] == (
        "Mr. Williams received a CT scan of his spine. What kind of contrast agent was used?\n\n"
        "Options:\nA: Gadovist\nB: Omnipaque 240\nC: Barium sulfate\nD: Imeron 300\nE: No contrast agent\n\n"
        "Answer with the letter and the text of the one correct option.")
    assert items["patient_01-q03"]["answers"] == ["2, 1"]
    # "Pneumonia" is inside "Aspiration pneumonia": flagged
    assert (items["patient_02-q01"]["answers"], items["patient_02-q01"]["tags"]) == (
        ["Pneumonia"], ["longhealth", "patient_02", "option-overlap"])

    record = (out / "patients" / "patient_01.md").read_text(encoding="utf-8")
    assert record.startswith("# Clinical documents (patient_01)\n\n## text_0\n\n**Dear colleague, **")
    assert record.index("## text_0") < record.index("Omnipaque 240") < record.index("## text_1") < record.index("Lenalidomide")
    assert "Multiple Myeloma\n" not in record.split("## text_0")[0]  # no metadata beyond the texts

    item = {i.id: i for i in suite.items}["patient_01-q02"]
    assert is_correct(item, "The correct answer is C: Lenalidomide.")
    assert not is_correct(item, "The correct answer is D: Thalidomide.")


# --- bad input -------------------------------------------------------------------------


def assert_one_line(exc: BaseException, path: Path) -> None:
    message = str(exc)
    assert "\n" not in message and message.strip() == message
    assert str(path) in message, message


def test_refuses_to_overwrite_a_suite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = convert("longhealth", LONGHEALTH, out, limit=1)
    with pytest.raises(BadInput) as exc:
        convert("longhealth", LONGHEALTH, out)
    assert_one_line(exc.value, out / "suite.jsonl")
    assert "overwrite" in str(exc.value)
    assert len(load_suite(first.suite).items) == 1
    assert convert("longhealth", LONGHEALTH, out, overwrite=True).items == 4
    assert len(load_suite(first.suite).items) == 4
    assert not (out / "suite.jsonl.partial").exists()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["financebench", "qasper", "longhealth"])
def test_missing_source(tmp_path: Path, kind: str) -> None:
    source = tmp_path / "nothing.json"
    (tmp_path / "pdfs").mkdir()
    with pytest.raises(BadInput) as exc:
        convert(kind, source, tmp_path / "out")  # type: ignore[arg-type]
    assert_one_line(exc.value, source)
    assert "no such file" in str(exc.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("qasper", '{"1909.00694": {"title": "x",', "not valid JSON"),
        ("longhealth", "[1, 2]", "expected a JSON object"),
        ("longhealth", "{}", "is empty"),
        ("qasper", json.dumps({"1909.00694": {"title": "x", "full_text": [], "qas": [{"question": "q"}]}}),
         "paper '1909.00694': qas.0.question_id: is required"),
        ("qasper", json.dumps({"p": {"title": "x", "full_text": {"section_name": ["a"], "paragraphs": [["b"]]}, "qas": []}}),
         "paper 'p': full_text:"),
        ("longhealth", json.dumps({"patient_01": {"texts": {"text_0": "t"}, "questions": [{"No": 1, "question": "q"}]}}),
         "patient 'patient_01': questions.0.answer_a: is required"),
        ("longhealth", json.dumps({"patient_01": "text"}), "patient 'patient_01': expected a JSON object, got a JSON string"),
        ("financebench", '{"financebench_id": "a", "doc_name": "d", "question": "q", "answer": "1"}\n{"oops"\n',
         ":2: not valid JSON"),
        ("financebench", '{"financebench_id": "a", "doc_name": "d", "question": "q"}\n', "line 1: answer: is required"),
        ("financebench", '{"financebench_id": "a", "doc_name": "../d", "question": "q", "answer": "1"}\n',
         "line 1: doc_name: must be a plain document name"),
        ("financebench", "\n\n", "no questions"),
    ],
)
def test_bad_input(tmp_path: Path, kind: str, text: str, expected: str) -> None:
    (tmp_path / "pdfs").mkdir()
    source = write(tmp_path / "dataset.json", text)
    with pytest.raises(BadInput) as exc:
        convert(kind, source, tmp_path / "out")  # type: ignore[arg-type]
    assert_one_line(exc.value, source)
    assert expected in str(exc.value)


def test_wrong_dataset_for_the_kind(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as exc:
        convert("longhealth", QASPER, tmp_path / "out")
    assert_one_line(exc.value, QASPER)
    assert "patient '1909.00694'" in str(exc.value)
    with pytest.raises(BadInput) as exc:
        convert("qasper", LONGHEALTH, tmp_path / "out")
    assert_one_line(exc.value, LONGHEALTH)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="limit must be at least 1"):
        convert("qasper", QASPER, tmp_path / "out", limit=0)
    with pytest.raises(BadInput, match="unknown dataset 'squad'"):
        convert("squad", QASPER, tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="only used for financebench"):
        convert("qasper", QASPER, tmp_path / "out", pdfs=tmp_path)
    write(tmp_path / "file", "x")
    with pytest.raises(BadInput, match="not a folder"):
        convert("qasper", QASPER, tmp_path / "file")
