"""``minionflow report``: the page of a two-round run, opened in headless Chromium (Debian's,
installed by scripts/setup.sh) with the network off. The test reads the DOM after the
page's script ran and looks at a screenshot; the page itself names nothing to fetch."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GOOD_CODE, cli_env, default_local, final_json, secret_doc
from fakes import FakeProvider, PromptFake
from minionflow.cli.report import render_report
from minionflow.contracts.settings import RunSettings
from minionflow.graphs.persistence import open_persistence
from minionflow.graphs.run import run_minions
from minionflow.graphs.threads import show_thread, thread_graph

CLI = str(Path(sys.executable).parent / "minionflow")
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: scripts/setup.sh installs Debian's"
    return path


def two_rounds(prompt: str) -> str:
    if "Write prepare_jobs now" in prompt:
        return GOOD_CODE
    if "This is the last round" in prompt:
        return final_json()
    return final_json(decision="request_additional_info", feedback="check every paragraph again")


@pytest.fixture(scope="module")
def thread(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("report")
    result = run_minions([secret_doc()], "What is the secret number?",
                         RunSettings(max_rounds=2, chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap"),
                         checkpoint=home, models=FakeProvider(PromptFake(responder=two_rounds),
                                                              PromptFake(responder=default_local)))
    assert result.status == "answered" and result.rounds == 2
    return home, result.thread_id


def test_the_report_of_a_two_round_run_opens_offline_in_chromium(thread, tmp_path):
    home, thread_id = thread
    with open_persistence(home) as (saver, store):
        page = render_report(show_thread(saver, store, thread_id), thread_graph(saver, store, thread_id))
    # nothing to fetch: no src or href anywhere, no URL but the SVG namespace
    assert not re.search(r"\b(?:src|href)\s*=", page)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    html = tmp_path / "run.html"
    html.write_text(page, encoding="utf-8")
    dom = subprocess.run([chromium(), *OFFLINE, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body and 'data-ready="1"' in body.group(0)  # the page's script ran
    assert 'data-jobs="24"' in body.group(0)  # 12 paragraphs, two rounds
    assert len(re.findall(r'<article class="round" data-round="\d">', dom.stdout)) == 2
    assert len(re.findall(r'<tr class="job" data-status="kept"', dom.stdout)) == 2  # the secret, once a round
    assert len(re.findall(r'<tr class="job" data-status="abstained"', dom.stdout)) == 22
    assert 'id="cost-chart"' in dom.stdout and 'id="egress"' in dom.stdout and "Answer:" in dom.stdout
    ran = dict(re.findall(r'data-node="(?:round:)?([a-z_]+)" data-ran="(\d+)"', dom.stdout))
    assert (ran["decompose"], ran["aggregate"], ran["parallel_minion_map"]) == ("2", "2", "24")
    shot = tmp_path / "run.png"
    done = subprocess.run([chromium(), *OFFLINE, f"--screenshot={shot}", "--window-size=1200,1600", html.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[1] == 1200 and pixels.std() > 0.05  # a page was drawn, not a blank one


def test_the_report_command_writes_the_page_and_refuses_a_missing_thread(thread, tmp_path):
    home, thread_id = thread
    out = tmp_path / "run.html"
    done = subprocess.run([CLI, "report", thread_id[:8], "-o", str(out), "--data-dir", str(home)], capture_output=True,
                          text=True, env=cli_env(home), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_text().startswith("<!DOCTYPE html>") and "wrote " in done.stderr
    missing = subprocess.run([CLI, "report", "no-such-thread", "-o", str(tmp_path / "x.html"), "--data-dir", str(home)],
                             capture_output=True, text=True, env=cli_env(home), timeout=120)
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert missing.returncode == 2 and len(lines) == 1 and "no-such-thread" in lines[0], missing.stderr
    assert not (tmp_path / "x.html").exists()
