"""``minionflow report``: the page of a two-round run, opened in headless Chromium (Debian's,
installed by scripts/setup.sh) with the network off. The test reads the DOM after the
page's script ran and looks at a screenshot; the page itself names nothing to fetch, and
its Content-Security-Policy (one ``<meta>``, before any style or script) lets it fetch
nothing and run no script but its own: a remote stylesheet, image or script, or an inline
script, put into the page is blocked by Chromium, which reports each violation, and none
reaches the proxy Chromium is given."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import CLI, cli_env, default_local, secret_doc, until_last_round
from fakes import FakeProvider, PromptFake
from minionflow.cli.report import render_report
from minionflow.contracts.settings import RunSettings
from minionflow.graphs import RunContext
from minionflow.graphs.run import run_minions
from minionflow.graphs.threads import show_thread, thread_graph
from minionflow.storage.persistence import open_persistence

OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


# the whole policy: nothing from anywhere (default-src 'none': no stylesheet, script, image,
# font, frame or request), but the page's own inline style, images as data: URLs, and one
# script: the page's own, named by its hash (``script-src 'sha256-...'``)
POLICY = {"default-src": ["'none'"], "style-src": ["'unsafe-inline'"], "img-src": ["data:"]}
CSP_META = re.compile(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')


def script_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def policy_of(page: str) -> dict[str, list[str]]:
    """The page's Content-Security-Policy by directive. It is given once, in the head before
    any style, script or title (a policy in a ``<meta>`` governs only what follows it)."""
    found = list(CSP_META.finditer(page))
    assert len(found) == 1, [m.group(0) for m in found]
    head = page[: page.index("</head>")]
    assert found[0].start() < min(head.index(tag) for tag in ("<style", "<script", "<title") if tag in head)
    directives = [part.split() for part in found[0].group(1).split(";") if part.strip()]
    return {name: values for name, *values in directives}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: scripts/setup.sh installs Debian's"
    return path


@pytest.fixture(scope="module")
def thread(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("report")
    result = run_minions([secret_doc()], "What is the secret number?",
                         RunContext(settings=RunSettings(max_rounds=2, chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap"),
                                    models=FakeProvider(PromptFake(responder=until_last_round),
                                                              PromptFake(responder=default_local))),
                         checkpoint=home)
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


def test_the_pages_allow_nothing_from_anywhere_and_no_script_but_their_own(thread, tmp_path):
    """The run's page and an eval's page carry exactly the policy ``POLICY``, and the one
    script it lets run is the page's own: the hash of its one inline script."""
    from minionflow.cli.report import render_eval_report
    from minionflow.evaluation.report import EvalSummary

    home, thread_id = thread
    with open_persistence(home) as (saver, store):
        page = render_report(show_thread(saver, store, thread_id), thread_graph(saver, store, thread_id))
    other = render_eval_report(EvalSummary(suite="s", items=0, batch=False, protocols=[]), str(tmp_path))
    for html in (page, other):
        (script,) = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
        assert policy_of(html) == {**POLICY, "script-src": [script_hash(script)]}


CANARY = "report-canary.invalid"
# a listener for the policy's violation reports, put at the top of the head, before the
# policy (which governs only what follows it)
LISTENER = ('<script>document.addEventListener("securitypolicyviolation", function (e) { var el = document.body || '
            'document.documentElement; el.setAttribute("data-blocked", (el.getAttribute("data-blocked") || "") + '
            'e.violatedDirective + " " + e.blockedURI + "|"); });</script>')
# what a page that let content through unescaped could be made to fetch or run
REMOTE = (f'<link rel="stylesheet" href="http://{CANARY}/s.css"><img src="http://{CANARY}/i.png" alt="">'
          f'<script src="http://{CANARY}/j.js"></script><script>fetch("http://{CANARY}/f").catch(function () {{}});'
          'document.body.setAttribute("data-injected", "ran");</script>')


class Proxy:
    """An HTTP proxy on 127.0.0.1 that answers every request 404 and records the host each
    was for (``hosts``). Chromium's own background requests (its updater) come here too."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        hosts = self.hosts

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def record(self) -> None:
                hosts.append(self.path.rsplit(":", 1)[0] if self.command == "CONNECT" else urlsplit(self.path).hostname or "")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_CONNECT = record  # noqa: N815 - http.server's names

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    recording = Proxy()
    yield recording
    recording.server.shutdown()
    recording.server.server_close()


def test_a_remote_resource_put_into_the_page_is_blocked_by_its_policy(thread, tmp_path, proxy: Proxy):
    """The report page with a remote stylesheet, image and script, and an inline script that
    fetches, put at the top of its body, opened with every request sent to a recording
    proxy: Chromium reports a violation of the policy for each (the inline script is not
    the page's own, so it does not run), none of them is requested, and the page's own
    script still runs."""
    home, thread_id = thread
    with open_persistence(home) as (saver, store):
        page = render_report(show_thread(saver, store, thread_id), thread_graph(saver, store, thread_id))
    page = page.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + LISTENER, 1)
    page = re.sub(r"<body[^>]*>", lambda m: m.group(0) + REMOTE, page, count=1)
    html = tmp_path / "injected.html"
    html.write_text(page, encoding="utf-8")
    flags = [f for f in OFFLINE if not f.startswith(("--proxy-server", "--host-resolver-rules"))]
    flags += [f"--proxy-server=http://127.0.0.1:{proxy.port}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
              "--virtual-time-budget=5000"]  # the page's tasks (the fetch's report) run before the dump
    dom = subprocess.run([chromium(), *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body and 'data-ready="1"' in body.group(0), body  # the page's own script ran
    assert "data-injected" not in body.group(0)  # the injected one did not
    assert CANARY not in proxy.hosts, proxy.hosts  # nothing was requested
    blocked = re.search(r'data-blocked="([^"]*)"', body.group(0))
    assert blocked, body.group(0)
    assert sorted(blocked.group(1).rstrip("|").split("|")) == [
        f"img-src http://{CANARY}/i.png", f"script-src-elem http://{CANARY}/j.js", "script-src-elem inline",
        f"style-src-elem http://{CANARY}/s.css"]


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


def test_the_page_of_a_finished_eval_shows_its_table_and_plot(tmp_path):
    from minionflow.cli.report import render_eval_report
    from minionflow.evaluation.report import EvalSummary, ProtocolSummary, write_reports

    def row(protocol: str, correct: int, cost: float) -> ProtocolSummary:
        return ProtocolSummary(
            protocol=protocol, items=10, answered=10, failed=0, refused=0, scored=10, correct=correct,
            accuracy=correct / 10, ci_low=max(correct / 10 - 0.2, 0), ci_high=min(correct / 10 + 0.2, 1), judged=0,
            judge_correct=0, judge_accuracy=None, fallback_answers=0, remote_prompt_tokens=1000, remote_completion_tokens=100,
            local_tokens=5000, cost_usd=cost * 10, cost_per_question_usd=cost, cost_per_correct_usd=cost * 10 / correct,
            latency_p50_s=2.0, latency_p95_s=3.0, wall_s=30.0, savings_vs_remote_only=None, savings_basis="measured",
            funnel={"right": correct, "job_text": 10 - correct - 1, "grounded": 1})

    summary = EvalSummary(suite="bench", items=10, batch=False,
                          protocols=[row("minions", 7, 0.002), row("remote-only", 9, 0.03)])
    paths = write_reports(summary, tmp_path)
    assert paths["funnel"].read_bytes().startswith(b"\x89PNG")
    page = render_eval_report(summary, str(tmp_path))
    # the plots' glyphs are drawn once and used by reference (href="#..."): within the page
    assert not re.search(r"""\b(?:src|href)\s*=\s*["'](?!#)""", page) and 'id="eval-plot"' in page
    assert 'id="funnel-plot"' in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:3]  # two plots, no id twice
    assert all(ref in ids for ref in re.findall(r'href="#([^"]+)"', page))  # every glyph use finds its glyph
    funnel = re.search(r'<table id="eval-funnel">(.*?)</table>', page, re.DOTALL)
    assert funnel is not None
    cells = [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", funnel.group(1), re.DOTALL)]
    assert cells[0][:4] == ["protocol", "answerable", "right", "job text"]
    assert cells[1][:4] == ["minions", "10", "7", "2"] and cells[2][:4] == ["remote-only", "10", "9", "0"]
    assert cells[1][cells[0].index("grounding")] == "1"
    html = tmp_path / "eval.html"
    html.write_text(page, encoding="utf-8")
    dom = subprocess.run([chromium(), *OFFLINE, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120)
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert dom.returncode == 0 and body and 'data-ready="1"' in body.group(0) and 'data-protocols="2"' in body.group(0)
    assert "7/10" in dom.stdout and "9/10" in dom.stdout and "<svg" in dom.stdout  # the correct column
    done = subprocess.run([CLI, "report", str(tmp_path), "-o", str(tmp_path / "cli.html")], capture_output=True,
                          text=True, env=cli_env(tmp_path / "home"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'id="eval-summary"' in (tmp_path / "cli.html").read_text()
