"""Two processes and one thread: exactly one runs it (storage/persistence.thread_lock),
on SQLite and on PostgreSQL; the lock ends with its process, even a killed one."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

from conftest import CLI, Where, cli_env, default_local, default_remote, secret_doc
from openai_server import OpenAIServer

QUESTION = "What is the secret number?"


class Held:
    """A local model that answers only once the test lets it: the first process is
    still inside its jobs while the second one tries the thread."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, prompt: str) -> str:
        assert self.release.wait(120), "the test never let the local model answer"
        return default_local(prompt)


def run_args(url: str, doc: Path, where: Where, thread: str, local: str = "gpt-4o-mini") -> list[str]:
    return [CLI, "run", str(doc), "-q", QUESTION, "--thread", thread, "--remote", f"gpt-4o@{url}",
            "--local", f"{local}@{url}", "--chunk-tokens", "40", "--sandbox", "bwrap", "--concurrency", "1",
            "--no-cache", "--json", "--quiet", *where.cli_args()]


def local_requests(server: OpenAIServer, model: str = "gpt-4o-mini") -> int:
    return sum(b["model"] == model for b in server.requests)


def wait_for_jobs(server: OpenAIServer, proc: subprocess.Popen[str], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while local_requests(server) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first process never reached its jobs"
        time.sleep(0.05)


def test_a_second_process_is_refused_while_the_first_runs_the_thread(where: Where, tmp_path: Path, spawn):
    """The first process holds the thread inside its first job; a resume and a run of the
    same thread from other processes are refused and run nothing, while a run of another
    thread in the same database goes on beside it and finishes. Killed (SIGKILL), the
    first process leaves the thread free: a resume finishes it."""
    doc = tmp_path / "ledger.txt"
    doc.write_text(secret_doc().text)
    local = Held()
    with OpenAIServer({"gpt-4o": default_remote, "gpt-4o-mini": local, "other-mini": default_local}) as server:
        url = server.start()
        first = spawn(run_args(url, doc, where, "t-both"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                      env=cli_env())
        wait_for_jobs(server, first)
        for second in (["resume", "t-both", "--json", *where.cli_args()], run_args(url, doc, where, "t-both")[1:]):
            out = subprocess.run([CLI, *second], capture_output=True, text=True, env=cli_env(), timeout=120)
            assert out.returncode == 2, out.stderr
            assert "thread t-both is running in another process" in out.stderr and out.stdout == ""
        assert local_requests(server) == 1  # the refused processes sent nothing
        other = subprocess.run(run_args(url, doc, where, "t-other", local="other-mini"), capture_output=True, text=True,
                               env=cli_env(), timeout=300)
        assert other.returncode == 0, other.stderr[-2000:]  # another thread runs beside it, in the same database
        assert json.loads(other.stdout)["answer"] == "42" and local_requests(server, "other-mini") == 12
        assert first.poll() is None and local_requests(server) == 1  # the first is still inside its first job
        first.send_signal(signal.SIGKILL)  # inside its first job, holding the thread
        first.wait(timeout=30)
        local.release.set()
        done = subprocess.run([CLI, "resume", "t-both", "--json", *where.cli_args()], capture_output=True, text=True,
                              env=cli_env(), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]  # the lock went with its process
        assert json.loads(done.stdout)["answer"] == "42"
        # the job in flight at the kill is asked again, every other job once
        assert local_requests(server) == 1 + 12
