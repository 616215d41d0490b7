"""minionflow eval: the matchers, the Wilson interval, suites and their bad input, the
runner with fake models (results, resume, a kill mid-eval, the judge, batch mode),
the reports (summary, Markdown, a valid PNG), and the CLI's refusals."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CLI, ROOT, SUBPROCESS_TIMEOUT, cli_env
from minionflow.contracts.errors import BadInput
from minionflow.evaluation.funnel import STAGES
from minionflow.evaluation.matchers import abstains, contains, exact, is_correct, normalize, numbers, numeric
from minionflow.evaluation.report import EvalSummary, markdown, percentile, plot, summarize, wilson
from minionflow.evaluation.runner import MANIFEST, RESULTS, ItemResult, Usage, read_results
from minionflow.evaluation.suite import SuiteItem, load_suite

HERE = Path(__file__).parent


def item(answers, match="contains", **kw) -> SuiteItem:  # type: ignore[no-untyped-def]
    return SuiteItem(id="x", documents=["d.md"], question="q?", answers=answers, match=match, **kw)


# --- matchers ----------------------------------------------------------------------------


def test_normalisation():
    assert normalize("  The Duluth, Minnesota   facility!  ") == "duluth minnesota facility"
    assert normalize("$1,577.5 million; e.g. U.S.") == "1577.5 million e g u s"
    assert normalize("17%") == normalize("17 percent") == "17 percent"
    assert normalize("An apple a day") == "apple day"


def test_contains_on_word_boundaries_and_exact():
    assert contains("We closed the Duluth cold-storage facility.", "duluth")
    assert contains("Dr. Okafor", "Okafor") and not contains("Okaforson", "Okafor")
    assert not contains("the annual report", "ort")
    assert exact("Yes.", "yes") and exact("Yes, the report says so.", "Yes") and not exact("No", "yes")
    assert exact("The Tacoma", "tacoma") and not exact("Tacoma, Washington", "Tacoma")


@pytest.mark.parametrize(("answer", "expected", "ok"), [
    ("Revenue was 72.7 billion dollars", "$72,705 million", True),
    ("$72,705 million", "72.7 billion", True),
    ("$72.7bn", "$72,705 million", True),
    ("about $73.5 billion", "$72,705 million", False),  # 1.1% off
    ("She weighed 78.9 kg", "79.2 kg", False),  # a neighbouring value, not a rounding
    ("She weighed 79 kg", "79.2 kg", False),  # too round: two significant digits
    ("$3.07 billion", "$3,066.0 million", True),  # rounded, three significant digits kept
    ("$3 billion", "$3,066.0 million", False),
    ("2", "1.94", False),
    ("The figure was $1,577 million.", "$1577.00", True),  # a dataset answer stated without its scale
    ("65.4 percent", "65.4%", True),
    ("a loss of -0.02 per share", "-0.02", True),
    ("0.02 per share", "-0.02", False),
    ("The depth is 12 metres, the width 40", "40", True),
    ("The KRS-55 holds 24 L of oil", "24 L", True),
    ("The KRS-55 holds 24 L of oil", "-55", False),  # a model name's hyphen is not a minus
    ("It holds 42 L", "24 L", False),
    ("no number here", "12.8", False),
])
def test_numeric_matches_units_and_scale(answer, expected, ok):
    assert numeric(answer, expected) is ok


def test_numbers_reads_currency_scale_and_percent():
    (n,) = numbers("$12.8 million")
    assert (n.mantissa, n.scale, n.percent) == (12.8, 1e6, False)
    (m,) = numbers("5 m")  # metres, not millions: a bare letter is a scale only after a currency sign
    assert m.scale == 1.0 and not m.stated_scale
    (k,) = numbers("$5m")
    assert k.value == 5e6
    assert numbers("17%")[0].percent


def test_numeric_tolerance_is_per_item():
    assert not is_correct(item(["100"], "numeric"), "It is 104.")
    assert is_correct(item(["100"], "numeric", tolerance=0.05), "It is 104.")
    assert is_correct(item(["100"], "numeric"), "It is 100.4.")  # within half a unit of "100"


@pytest.mark.parametrize("answer", [
    "The documents do not appear to answer this: no minion found a passage that supports an answer.",
    "No LDL result is recorded in the documents.", "Not stated.", "The report doesn't say.",
    "The blood type is not mentioned in the record.", "I could not find it.", "It is unknown.",
    "None of the documents mention the auditor.", "There is no information about net income.",
])
def test_abstentions(answer):
    assert abstains(answer)
    assert is_correct(item([], "abstain"), answer)


@pytest.mark.parametrize("answer", ["Duluth", "The text mentions her blood type as A", "Ernst & Young audited it",
                                    "No, the facility was not closed in 2024 but in 2025", ""])
def test_answers_that_do_not_abstain(answer):
    assert not abstains(answer)
    assert is_correct(item([], "abstain"), answer) is False


def test_articles_yes_no_and_abstentions_cannot_fool_the_matchers():
    assert is_correct(item(["A"]), "Her blood type is A positive") and not is_correct(item(["A"]), "type B")
    assert not exact("The", "A") and not exact("No idea.", "no") and exact("No, it was not.", "no")
    assert not is_correct(item(["Duluth"]), "The documents do not mention Duluth.")
    assert is_correct(item(["Duluth"]), "Duluth. The documents do not say why.")  # an answer, then a gap


def test_a_quote_completes_an_answer_but_is_never_the_answer():
    parts = item([["Duluth"], ["ammonia", "refrigeration"]], "all")
    assert is_correct(parts, "Northwind closed the Duluth facility.", "after its ammonia refrigeration failed")
    assert not is_correct(parts, "Northwind closed a facility.", "the Duluth facility's refrigeration failed")
    assert not is_correct(item(["Solberg"]), "Tomas Reyes", "The harbour master is Ingrid Solberg.")
    assert not is_correct(item(["12.8"], "numeric"), "a charge", "an impairment charge of $12.8 million")


def test_all_needs_every_part_and_accepts_alternatives():
    parts = item([["Duluth"], ["ammonia", "refrigeration"]], "all")
    assert is_correct(parts, "Duluth: its refrigeration failed an inspection")
    assert is_correct(parts, "the Duluth site (ammonia leak)")
    assert not is_correct(parts, "Duluth")
    assert not is_correct(parts, "the refrigeration failed")


def test_unscored_items_have_no_verdict():
    assert is_correct(item([]), "anything") is None
    assert is_correct(item(["x"]), None) is False


# --- the Wilson interval and percentiles -------------------------------------------------


def test_wilson_interval():
    low, high = wilson(8, 10)
    assert math.isclose(low, 0.4902, abs_tol=1e-4) and math.isclose(high, 0.9433, abs_tol=1e-4)
    low, high = wilson(0, 10)
    assert low == 0.0 and math.isclose(high, 0.2775, abs_tol=1e-4)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(0, 0) == (0.0, 0.0)


def test_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([3.0], 95) == 3.0 and percentile([], 50) is None


# --- suites and their bad input -----------------------------------------------------------


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_line(id_: str = "a", doc: str = "doc.md", **kw) -> str:  # type: ignore[no-untyped-def]
    return json.dumps({"id": id_, "documents": [doc], "question": "What is the colour of the harbour?",
                       "answers": ["granite"], **kw})


@pytest.mark.parametrize(("lines", "message"), [
    ([good_line(), "{not json"], "suite.jsonl:2: not valid JSON"),
    ([good_line(), good_line("b", match="fuzzy")], "suite.jsonl:2: match: must be one of contains, exact, numeric, all, abstain"),
    ([good_line(), json.dumps({"id": "b", "documents": ["doc.md"], "answers": []})], "suite.jsonl:2: question: is required"),
    ([good_line(), good_line("a")], "suite.jsonl:2: id 'a' is already used on line 1"),
    (["", "// a comment", good_line("b", doc="missing.md")], "suite.jsonl:3: item 'b': document 'missing.md' not found"),
    ([good_line(answers=["x"], match="abstain")], "suite.jsonl:1: a question with match 'abstain' has no answers"),
    (["[1, 2]"], "suite.jsonl:1: expected a JSON object, got list"),
    ([good_line(colour="red")], "suite.jsonl:1: colour: is not a suite field"),
    (["", "  "], "the suite has no questions"),
])
def test_bad_suites_are_refused_with_the_line(tmp_path, lines, message):
    (tmp_path / "doc.md").write_text("The colour of the harbour is granite.\n")
    path = write(tmp_path / "suite.jsonl", lines)
    with pytest.raises(BadInput) as exc:
        load_suite(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


# --- the runner, with fakes, in a subprocess --------------------------------------------------

DOC = "\n\n".join([
    "Paragraph one is about ships and their crews.",
    "The colour of the harbour is granite.",
    "Paragraph three lists cranes on the quay.",
    "The depth of the harbour is 12.",
    "Paragraph five is about the weather in general.",
])


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    (tmp_path / "harbour.md").write_text(DOC)
    lines = [
        json.dumps({"id": "colour", "documents": ["harbour.md"], "question": "What is the colour of the harbour?",
                    "answers": ["granite"], "tags": ["fact"]}),
        json.dumps({"id": "depth", "documents": ["harbour.md"], "question": "What is the depth of the harbour?",
                    "answers": ["12"], "match": "numeric", "tags": ["number"]}),
        json.dumps({"id": "owner", "documents": ["harbour.md"], "question": "What is the owner of the harbour?",
                    "answers": [], "match": "abstain", "tags": ["unanswerable"]}),
    ]
    return write(tmp_path / "suite.jsonl", lines)


def run_worker(suite: Path, out: Path, calls: Path, *extra: str, timeout: float = 240) -> list[dict]:  # type: ignore[type-arg]
    proc = subprocess.run([sys.executable, str(HERE / "eval_worker.py"), str(suite), str(out), str(calls), *extra],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_eval_scores_every_item_and_protocol_and_resumes_without_calls(tmp_path, suite):
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    results = run_worker(suite, out, calls)
    by = {(r["item_id"], r["protocol"]): r for r in results}
    assert len(by) == 9
    assert all(r["status"] == "answered" for r in results)
    for protocol in ("minions", "remote-only", "local-only"):
        assert by[("colour", protocol)]["correct"] is True, by[("colour", protocol)]
        assert by[("depth", protocol)]["correct"] is True
        assert by[("owner", protocol)]["correct"] is True, by[("owner", protocol)]["answer"]
    # the minions read five paragraphs per question; local-only one call; remote-only none locally
    minions = by[("colour", "minions")]
    assert minions["usage"]["local_prompt_tokens"] > 0 and minions["usage"]["remote_prompt_tokens"] > 0
    assert by[("colour", "remote-only")]["usage"]["local_prompt_tokens"] == 0
    assert by[("colour", "local-only")]["usage"]["remote_prompt_tokens"] == 0
    assert len({r["thread_id"] for r in results}) == 9
    # the loss funnel: every stage held the right answers; no minion stages without minions; none unanswerable
    assert by[("colour", "minions")]["funnel"] == {"held": dict.fromkeys(STAGES, True), "lost_at": None}
    assert by[("depth", "remote-only")]["funnel"]["held"]["job_text"] is None
    assert by[("owner", "minions")]["funnel"] is None
    lines = (out / RESULTS).read_text().splitlines()
    assert len(lines) == 9
    first_calls = calls.read_text().splitlines()
    assert sum(c.startswith("local") for c in first_calls) == 3 * 5 + 3  # 5 jobs per minions run, 1 per local-only

    # the same eval again: nothing runs, nothing is appended
    again = run_worker(suite, out, calls)
    assert calls.read_text().splitlines() == first_calls
    assert [r["thread_id"] for r in again] == [r["thread_id"] for r in results]
    assert len((out / RESULTS).read_text().splitlines()) == 9

    # results written before funnels were recorded get theirs from the threads, with no call
    (out / RESULTS).write_text("".join(json.dumps({**json.loads(line), "funnel": None}) + "\n" for line in lines))
    backfilled = run_worker(suite, out, calls)
    assert calls.read_text().splitlines() == first_calls
    assert [r["funnel"] for r in backfilled] == [r["funnel"] for r in results]
    assert len((out / RESULTS).read_text().splitlines()) == 9 + 6  # a line for each answerable question


def test_an_eval_killed_mid_run_resumes_only_what_did_not_finish(tmp_path, suite):
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    proc = subprocess.Popen([sys.executable, str(HERE / "eval_worker.py"), str(suite), str(out), str(calls),
                             "--protocols", "minions", "--hang", "depth"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log = calls.read_text() if calls.exists() else ""
            if log.count("local What is the depth") >= 4:  # the hanging job and others of the second item started
                break
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = read_results(out)
    assert list(finished) == [("colour", "minions")]
    before = calls.read_text().splitlines()
    depth_jobs_before = sum(c == "local What is the depth of the harbour?" for c in before)

    results = run_worker(suite, out, calls, "--protocols", "minions")
    after = calls.read_text().splitlines()[len(before):]
    assert [r["item_id"] for r in results] == ["colour", "depth", "owner"]
    assert all(r["correct"] for r in results)
    assert not any("colour" in c for c in after)  # the finished item is not run again
    # the killed item's thread resumed: its finished jobs were not asked again
    depth_jobs_after = sum(c == "local What is the depth of the harbour?" for c in after)
    assert depth_jobs_before + depth_jobs_after >= 5 and depth_jobs_after < 5
    assert len((out / RESULTS).read_text().splitlines()) == 3


def test_the_judge_is_recorded_apart_from_the_deterministic_verdict(tmp_path, suite):
    results = run_worker(suite, tmp_path / "out", tmp_path / "calls.log", "--protocols", "remote-only", "--judge")
    by = {r["item_id"]: r for r in results}
    assert by["colour"]["correct"] is True and by["colour"]["judge"]["correct"] is True
    # the fake judge says "wrong" to anything without "granite": the deterministic verdict stands
    assert by["depth"]["correct"] is True and by["depth"]["judge"]["correct"] is False
    assert by["depth"]["judge"]["model"] == "judge@http://127.0.0.1:9/v1"
    summary = summarize("suite", 3, False, ["remote-only"], [ItemResult.model_validate(r) for r in results])
    (row,) = summary.protocols
    assert by["owner"]["correct"] is True and by["owner"]["judge"]["correct"] is False
    assert (row.correct, row.scored, row.judge_correct, row.judged) == (3, 3, 1, 3)
    assert row.accuracy == 1.0 and row.judge_accuracy == pytest.approx(1 / 3)
    assert "judge" in markdown(summary)


def test_an_eval_folder_holds_one_eval_that_can_grow(tmp_path, suite):
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    first = run_worker(suite, out, calls, "--protocols", "remote-only")
    # a folder written before a setting existed (its stored settings lack it): the same settings, not other ones
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["settings"]["remote-only"]["job_cache"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert run_worker(suite, out, calls, "--protocols", "remote-only") == first  # all finished: nothing runs again
    # other settings for a protocol that ran: refused, in one line, before any call
    proc = subprocess.run([sys.executable, str(HERE / "eval_worker.py"), str(suite), str(out), str(tmp_path / "c2"),
                           "--protocols", "remote-only", "--max-rounds", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {out} ran remote-only with other settings; use another --out, or the same settings"
    assert not (tmp_path / "c2").exists()
    # another protocol joins the same eval: only its runs happen
    before = calls.read_text().splitlines()
    both = run_worker(suite, out, calls, "--protocols", "remote-only,local-only")
    added = calls.read_text().splitlines()[len(before):]
    assert len(added) == 3 and all(c.startswith("local") for c in added)
    assert [r["thread_id"] for r in both if r["protocol"] == "remote-only"] == [r["thread_id"] for r in first]
    # a changed document is another eval
    (tmp_path / "harbour.md").write_text(DOC.replace("granite", "basalt"))
    proc = subprocess.run([sys.executable, str(HERE / "eval_worker.py"), str(suite), str(out), str(calls),
                           "--protocols", "remote-only"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "holds an eval of other documents (harbour.md changed since)" in proc.stderr


def test_a_torn_results_line_and_a_run_finished_but_not_recorded_are_recovered_without_calls(tmp_path, suite):
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    results = run_worker(suite, out, calls, "--protocols", "minions")
    lines = (out / RESULTS).read_text().splitlines(keepends=True)
    # the process was killed while writing the last line: half of it is there
    (out / RESULTS).write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    before = calls.read_text()
    again = run_worker(suite, out, calls, "--protocols", "minions")
    assert calls.read_text() == before  # the thread had finished: its result is read, not run again
    assert [r["answer"] for r in again] == [r["answer"] for r in results]
    assert again[2]["resumed"] is True and again[2]["correct"] is results[2]["correct"]
    assert [json.loads(line)["item_id"] for line in (out / RESULTS).read_text().splitlines()] == ["colour", "depth", "owner"]


def test_one_eval_process_per_folder(tmp_path, suite):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with (out / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = subprocess.run([sys.executable, str(HERE / "eval_worker.py"), str(suite), str(out), str(tmp_path / "c"),
                               "--protocols", "remote-only"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: another minionflow eval is running in {out}"


# --- reports ------------------------------------------------------------------------------------


def results_for(protocol: str, correct: list[bool | None], cost: float, seconds: list[float]) -> list[ItemResult]:
    return [ItemResult(item_id=f"q{i}", protocol=protocol, status="answered", answer="a", correct=c, match="contains",
                       usage=Usage(remote_prompt_tokens=100, remote_completion_tokens=10, local_prompt_tokens=1000,
                                   cost_usd=cost, remote_only_cost_usd=0.05),
                       elapsed_s=s, thread_id=f"t{i}")
            for i, (c, s) in enumerate(zip(correct, seconds, strict=True))]


def test_summary_figures_and_a_valid_png(tmp_path):
    results = (results_for("minions", [True, True, False, True], 0.01, [10, 20, 30, 40])
               + results_for("remote-only", [True, True, True, True], 0.05, [5, 5, 5, 5]))
    summary = summarize("bench", 4, False, ["minions", "remote-only"], results)
    minions, remote = summary.protocols
    assert (minions.correct, minions.scored, minions.accuracy) == (3, 4, 0.75)
    assert minions.ci_low == pytest.approx(wilson(3, 4)[0]) and minions.ci_high == pytest.approx(wilson(3, 4)[1])
    assert minions.cost_usd == pytest.approx(0.04) and minions.cost_per_correct_usd == pytest.approx(0.04 / 3, abs=1e-6)
    assert minions.latency_p50_s == pytest.approx(25.0) and minions.latency_p95_s == pytest.approx(38.5)
    assert minions.savings_vs_remote_only == pytest.approx(5.0) and minions.savings_basis == "measured"
    assert minions.remote_prompt_tokens == 400 and minions.local_tokens == 4000
    table = markdown(summary)
    assert "| minions | 75.0% |" in table and "5.0x (measured)" in table
    path = tmp_path / "plot.png"
    plot(summary, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500


def test_savings_use_remote_only_where_it_answered_and_the_estimate_where_it_could_not():
    minions = results_for("minions", [True, True, True, True], 0.01, [10, 10, 10, 10])
    remote = results_for("remote-only", [True, True, False, False], 0.05, [5, 5, 0, 0])
    for r in remote[2:]:  # the documents did not fit the embedded supervisor: refused, or a failed call charged nothing
        r.status, r.usage = ("refused", Usage()) if r.item_id == "q2" else ("answered", Usage(remote_only_cost_usd=0.05))
    for r in minions[2:]:
        r.usage = r.usage.model_copy(update={"remote_only_cost_usd": 0.09})
    row = summarize("bench", 4, False, ["minions", "remote-only"], minions + remote).protocols[0]
    assert row.savings_vs_remote_only == pytest.approx((0.05 + 0.05 + 0.09 + 0.09) / 0.04)
    assert row.savings_basis == "measured for 2 of 4, else estimated"
    alone = summarize("bench", 4, False, ["minions"], minions).protocols[0]
    assert alone.savings_basis == "estimated" and alone.savings_vs_remote_only == pytest.approx((0.05 * 2 + 0.09 * 2) / 0.04)


def test_batch_mode_reports_without_scoring(tmp_path):
    results = results_for("minions", [None, None], 0.01, [3, 4])
    summary = summarize("batch", 2, True, ["minions"], results)
    (row,) = summary.protocols
    assert summary.batch and row.accuracy is None and row.scored == 0 and row.ci_low is None
    assert "accuracy" not in markdown(summary) and "cost / correct" in markdown(summary)
    plot(summary, tmp_path / "batch.png")
    assert (tmp_path / "batch.png").read_bytes()[:4] == b"\x89PNG"
    assert EvalSummary.model_validate_json(summary.model_dump_json()) == summary


# --- the CLI refuses bad input in one line, before any model is called --------------------------


@pytest.mark.parametrize(("case", "message"), [
    ("malformed", "suite.jsonl:2: not valid JSON"),
    ("missing", "document 'gone.md' not found"),
    ("protocol", "unknown protocol 'magic' in --protocols"),
    ("empty", "the suite has no questions"),
])
def test_cli_refuses_bad_input_before_any_model_call(tmp_path, case, message):
    (tmp_path / "doc.md").write_text("The colour of the harbour is granite.\n")
    lines = {"malformed": [good_line(), "{oops"], "missing": [good_line(doc="gone.md")], "protocol": [good_line()],
             "empty": [""]}[case]
    suite = write(tmp_path / "suite.jsonl", lines)
    home = tmp_path / "home"
    args = [CLI, "eval", str(suite), "--out", str(tmp_path / "out")]
    if case == "protocol":
        args += ["--protocols", "minions,magic"]
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, env=cli_env(home), timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines_out = proc.stderr.strip().splitlines()
    assert len(lines_out) == 1 and lines_out[0].startswith("error: ") and message in lines_out[0], proc.stderr
    assert not (home / "embedded-server.log").exists()  # no model was started
    assert not (tmp_path / "out").exists()  # nothing was written
    assert time.monotonic() - started < 30


def test_convert_cli(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "datasets" / "qasper" / "qasper-dev-v0.3.json"
    proc = subprocess.run([CLI, "convert", "qasper", str(fixture), "--out", str(tmp_path / "q")],
                          capture_output=True, text=True, env=cli_env(tmp_path / "home"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "qasper: " in proc.stdout and (tmp_path / "q" / "suite.jsonl").is_file()
    assert len(load_suite(tmp_path / "q" / "suite.jsonl").items) > 0
    bad = subprocess.run([CLI, "convert", "squad", str(fixture), "--out", str(tmp_path / "s")],
                         capture_output=True, text=True, env=cli_env(tmp_path / "home"), timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: unknown dataset 'squad'; choose one of financebench, qasper, longhealth"


# --- end to end, with the embedded model in both roles, through the CLI ------------------------

E2E_DOC = """# Harbour office notes

## Moorings
The north pier was closed on 3 March because storm damage cracked its pilings.
Visiting yachts moor at the east basin, which has 42 berths.

## Staff
The harbour master is Ingrid Solberg. She took over from Tomas Reyes in 2019.
"""


@pytest.mark.embedded
def test_end_to_end_eval_of_two_questions_with_the_embedded_model(tmp_path):
    """An answer and an abstention, each asked with two protocols (the matchers themselves
    are tested without a model above)."""
    (tmp_path / "notes.md").write_text(E2E_DOC)
    suite = write(tmp_path / "suite.jsonl", [
        json.dumps({"id": "master", "documents": ["notes.md"], "question": "Who is the harbour master?",
                    "answers": ["Solberg"]}),
        json.dumps({"id": "fee", "documents": ["notes.md"], "question": "What is the mooring fee per night?",
                    "answers": [], "match": "abstain"}),
    ])
    home, out = tmp_path / "home", tmp_path / "out"
    args = [CLI, "eval", str(suite), "--protocols", "minions,local-only", "--out", str(out), "--json"]
    proc = subprocess.run(args, capture_output=True, text=True, env=cli_env(home), timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    # piped and --json: a plain progress line on stderr as each question x protocol ends
    progress = [line for line in proc.stderr.splitlines() if line.startswith("progress: [")]
    assert len(progress) == 4 and progress[-1].startswith("progress: [2/2] fee · local-only: answered"), proc.stderr[-2000:]
    rows = {p["protocol"]: p for p in summary["protocols"]}
    assert set(rows) == {"minions", "local-only"} and summary["items"] == 2 and summary["batch"] is False
    for row in rows.values():
        assert row["answered"] == row["scored"] == 2 and row["failed"] == row["refused"] == 0
        assert 0 <= row["correct"] <= 2 and row["ci_low"] <= (row["accuracy"] or 0) <= row["ci_high"]
        assert row["latency_p50_s"] > 0
    # the roles: the minions spend supervisor (remote-role) and worker tokens, local-only only local ones
    assert rows["minions"]["remote_prompt_tokens"] > 0 and rows["minions"]["local_tokens"] > 0
    assert rows["local-only"]["remote_prompt_tokens"] == 0 and rows["local-only"]["local_tokens"] > 0
    assert rows["local-only"]["savings_basis"] == "free"
    results = [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]
    assert len(results) == 4 and all(r["status"] == "answered" and r["thread_id"] for r in results)
    assert all(isinstance(r["correct"], bool) for r in results)
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG" and "| minions |" in (out / "summary.md").read_text()
    # each minions thread is a run like any other: `show` opens it from the eval's folder
    thread = next(r["thread_id"] for r in results if r["protocol"] == "minions")
    shown = subprocess.run([CLI, "show", thread, "--checkpoint", str(out), "--json"], capture_output=True,
                           text=True, env=cli_env(home), timeout=120)
    assert shown.returncode == 0 and json.loads(shown.stdout)["summary"]["thread_id"] == thread

    # run again: everything finished, so no model is called and nothing is appended
    calls_before = (home / "embedded-server.log").read_text().count("POST /v1/chat/completions")
    again = subprocess.run(args, capture_output=True, text=True, env=cli_env(home), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout) == summary
    assert (home / "embedded-server.log").read_text().count("POST /v1/chat/completions") == calls_before
    assert len((out / RESULTS).read_text().splitlines()) == 4
