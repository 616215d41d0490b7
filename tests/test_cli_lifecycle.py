"""The claims of docs/runs.md about a run's life, each through the CLI as a user drives it:
exit 1 and a resume that redoes no finished job, two Ctrl-Cs and SIGTERM then Ctrl-C, a
review answered with --accept and with --edit FILE, and a fork with other models.
The models are an OpenAI-compatible server (tests/openai_server.py) whose replies
derive from the prompt, so each case runs in seconds and its counts are exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from conftest import CLI, GOOD_CODE, cli_env, default_local, default_remote, secret_doc
from openai_server import OpenAIServer, ServerError

QUESTION = "What is the secret number?"


class Models:
    """The supervisor (gpt-4o) and two minion models of one server; the supervisor can
    be made unavailable at aggregation, the minions slow."""

    def __init__(self) -> None:
        self.aggregate_down = False
        self.local_delay = 0.0
        self.local_hook: Callable[[], object] = lambda: None  # run in each minion request
        self.server = OpenAIServer({"gpt-4o": self.remote, "gpt-4o-mini": self.local, "other-mini": self.local})
        self.url = self.server.start()

    def remote(self, prompt: str) -> str:
        if "Write prepare_jobs now" not in prompt and self.aggregate_down:
            raise ServerError(503)
        return default_remote(prompt)

    def local(self, prompt: str) -> str:
        self.local_hook()
        time.sleep(self.local_delay)
        return default_local(prompt)

    def requests(self, model: str) -> int:
        return sum(1 for b in self.server.requests if b["model"] == model)

    def specs(self, local: str = "gpt-4o-mini") -> list[str]:
        return ["--remote", f"gpt-4o@{self.url}", "--local", f"{local}@{self.url}"]


@pytest.fixture
def models():
    m = Models()
    yield m
    m.server.stop()


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.txt"
    path.write_text(secret_doc().text)
    return path


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args, "--data-dir", str(home)], capture_output=True, text=True,
                          env=cli_env(home, COLUMNS="200"), timeout=300)


def test_a_failed_run_exits_1_and_resume_redoes_no_finished_job(models, doc, tmp_path):
    home = tmp_path / "home"
    models.aggregate_down = True
    failed = cli("run", str(doc), "-q", QUESTION, *models.specs(), "--chunk-tokens", "40", "--thread", "t-down",
                 "--quiet", home=home)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "The run failed: a model endpoint stayed unreachable after 3 attempts" in failed.stdout
    assert "Error code: 503" in failed.stdout
    assert f"resume with: minionflow resume t-down --data-dir {home}" in " ".join(failed.stdout.split())
    assert "Against sending" not in failed.stdout and models.requests("gpt-4o-mini") == 12
    models.aggregate_down = False
    resumed = cli("resume", "t-down", "--json", "--quiet", home=home)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads(resumed.stdout)
    assert result["status"] == "answered" and result["answer"] == "42"
    assert models.requests("gpt-4o-mini") == 12 and result["usage"]["local"]["calls"] == 12  # none ran again


class Output:
    """A pipe read line by line on a thread of its own, so a test can wait for a line."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> bool:
        with self._seen:
            return self._seen.wait_for(lambda: any(text in line for line in self.lines), timeout=timeout)

    def text(self) -> str:
        self._thread.join(timeout=60)
        return "".join(self.lines)


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c-twice", "sigterm-then-ctrl-c"])
def test_a_signal_pauses_and_a_second_stops_at_once_naming_the_resume(models, doc, tmp_path, spawn, first):
    """Ctrl-C goes where a terminal sends it, to the CLI's whole process group; SIGTERM to
    the CLI, as a process manager sends it. The second signal follows the first's
    "pausing" line (the order of events, not a pause of some length)."""
    home = tmp_path / "home"
    models.local_delay = 0.5  # 12 jobs one at a time: about 6 seconds of map
    proc = spawn([CLI, "run", str(doc), "-q", QUESTION, *models.specs(), "--chunk-tokens", "40",
                             "--concurrency", "1", "--thread", "t-sig", "--data-dir", str(home)],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(home), start_new_session=True)
    out, err = Output(proc.stdout), Output(proc.stderr)
    deadline = time.monotonic() + 60
    while models.requests("gpt-4o-mini") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert models.requests("gpt-4o-mini") >= 3, "the map never started"
    ctrl_c = lambda: os.killpg(proc.pid, signal.SIGINT)  # noqa: E731
    ctrl_c() if first == signal.SIGINT else proc.send_signal(first)
    assert err.wait_for("pausing after the current step"), err.text()[-2000:]
    ctrl_c()
    assert proc.wait(timeout=60) == 130, err.text()[-2000:]
    assert "stopping now" in err.text()
    assert f"Resume with: minionflow resume t-sig --data-dir {home}" in out.text()
    stopped_at = models.requests("gpt-4o-mini")
    assert stopped_at < 12
    models.local_delay = 0.0
    resumed = cli("resume", "t-sig", "--json", "--quiet", home=home)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resumed_result = json.loads(resumed.stdout)
    assert resumed_result["answer"] == "42" and resumed_result["usage"]["local"]["calls"] == 12
    # the jobs that finished before the stop did not run again; the one in flight did
    assert 12 <= models.requests("gpt-4o-mini") <= 12 + 1


@pytest.mark.parametrize("answer", ["accept", "edit"])
def test_a_review_answered_through_the_cli(models, doc, tmp_path, answer):
    home = tmp_path / "home"
    waiting = cli("run", str(doc), "-q", QUESTION, *models.specs(), "--chunk-tokens", "40", "--approve",
                  "--thread", "t-review", "--quiet", home=home)
    assert waiting.returncode == 3 and models.requests("gpt-4o-mini") == 0, waiting.stderr[-2000:]
    if answer == "accept":
        done = cli("resume", "t-review", "--accept", "--json", "--quiet", home=home)
        task = "Find the secret number"
    else:
        edited = tmp_path / "edited.py"
        edited.write_text(GOOD_CODE.split("\n", 1)[1].rsplit("```", 1)[0].replace("Find the secret number",
                                                                                   "Find the ledger's number"))
        done = cli("resume", "t-review", "--edit", str(edited), "--json", "--quiet", home=home)
        task = "Find the ledger's number"
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["status"] == "answered" and result["sandbox"] == "docker"  # auto: the engine is there
    jobs = [b for b in models.server.requests if b["model"] == "gpt-4o-mini"]
    assert len(jobs) == 12 and all(task in b["messages"][-1]["content"] for b in jobs)
    assert any("edited by the reviewer" in n for n in result["notes"]) == (answer == "edit")


def test_fork_with_another_local_model(models, doc, tmp_path):
    home = tmp_path / "home"
    first = cli("run", str(doc), "-q", QUESTION, *models.specs(), "--chunk-tokens", "40", "--thread", "t-first",
                "--quiet", home=home)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [line.split("\t") for line in cli("history", "t-first", home=home).stdout.splitlines()[1:]]
    at = next(row[0] for row in rows if row[4] == "round")  # the start of round 1
    forked = cli("fork", "t-first", "--at", at, "--local", f"other-mini@{models.url}", "--json", "--quiet", home=home)
    assert forked.returncode == 0, forked.stderr[-2000:]
    result = json.loads(forked.stdout)
    assert result["status"] == "answered" and result["thread_id"] != "t-first"
    assert {c["model"] for c in result["calls"] if c["role"] == "local"} == {f"other-mini@{models.url}"}
    assert models.requests("other-mini") == 12 and models.requests("gpt-4o-mini") == 12


def test_the_server_answers_each_request_on_its_own_thread(models):
    """The lifecycle cases rely on a slow job not holding the others back: six requests
    meet inside the server (a barrier of six, which a server answering one at a time never
    fills)."""
    import openai

    meet = threading.Barrier(6, timeout=60)
    models.local_hook = meet.wait
    client = openai.OpenAI(base_url=models.url, api_key="test", max_retries=0)
    replies: list[object] = []
    threads = [threading.Thread(target=lambda: replies.append(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not meet.broken and len(replies) == 6 and models.requests("gpt-4o-mini") == 6
