"""The command line: bad input is refused before any model is called, and the
main job runs end to end on the embedded model over real HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import CLI, SUBPROCESS_TIMEOUT, cli_env
from pdfgen import write_pdf
from pypdf import PdfWriter

PAGES = [
    "Harbor Authority of Port Elsworth. Annual Operations Review.\n"
    + "The harbor handled general cargo, bulk grain and timber during the year. " * 40,
    "Section 2. Cranes and berths.\n"
    + "Berth maintenance continued on schedule and the cranes were inspected twice. " * 40,
    "Section 3. Incidents.\n"
    "The north pier was closed on March 3 because a storm damaged its pilings. "
    "Repairs cost 2.4 million dollars and the pier reopened in May.\n"
    + "No other incidents were reported. " * 6,
]


def cli(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=cli_env(home, **(env or {})), timeout=timeout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def good_doc(tmp_path: Path) -> Path:
    return write_pdf(tmp_path / "review.pdf", PAGES)


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Caf\u00e9 cr\u00e8me, d\u00e9j\u00e0 vu".encode("latin-1"))
    blank_pdf = tmp_path / "scan.pdf"
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_blank_page(612, 792)
    with blank_pdf.open("wb") as f:
        writer.write(f)
    broken_pdf = tmp_path / "broken.pdf"
    broken_pdf.write_bytes(b"%PDF-1.4 this is not really a pdf")
    docx = tmp_path / "report.docx"
    docx.write_bytes(b"PK\x03\x04")
    return {
        "missing": (tmp_path / "nope.txt", "no such file"),
        "empty": (empty, "the file is empty"),
        "binary": (binary, "looks like a binary file"),
        "undecodable": (latin, "not valid UTF-8"),
        "pdf without text": (blank_pdf, "the document has no text (a scanned PDF needs OCR first)"),
        "broken pdf": (broken_pdf, "not a readable PDF"),
        "unsupported type": (docx, "unsupported file type .docx"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "binary", "undecodable", "pdf without text", "broken pdf", "unsupported type"])
def test_bad_documents_exit_2_with_one_line(case, tmp_path, home):
    path, message = bad_files(tmp_path)[case]
    result = cli("run", str(path), "-q", "What happened?", home=home)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert result.stdout == ""
    assert not (home / "embedded-server.log").exists()  # no model was started


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--remote", "gpt-9000"], {}, "unknown model spec 'gpt-9000'"),
        (["--local", "embedded:/no/such/model.gguf"], {}, "GGUF file not found: /no/such/model.gguf"),
        (["--remote", "m@http://127.0.0.1:9/v1"], {}, "endpoint http://127.0.0.1:9/v1 is unreachable"),
        (["--remote", "openai:gpt-4o"], {}, "needs an API key: set the environment variable OPENAI_API_KEY"),
        (["--remote", "m@http://127.0.0.1:9/v1;key=MY_VLLM_KEY"], {}, "set the environment variable MY_VLLM_KEY"),
        (["--remote", "embedded;structured=xml"], {}, "unknown structured-output method 'xml'"),
        (["--sandbox", "chroot"], {}, "error: --sandbox: 'chroot' is not a choice; choose 'auto', 'docker' or 'bwrap'"),
        (["--max-rounds", "0"], {}, "error: Invalid value for '--max-rounds': Input should be greater than or equal to 1"),
        (["--chunk-tokens", "-5"], {}, "error: Invalid value for '--chunk-tokens'"),
        (["--concurrency", "0"], {}, "error: Invalid value for '--concurrency'"),
        (["--remote-max-tokens", "10"], {}, "error: --remote-max-tokens: Input should be greater than or equal to 64"),
        (["--local-max-tokens", "abc"], {}, "error: Invalid value for '--local-max-tokens': Input should be a valid integer"),
        (["--concurency", "2"], {}, "error: No such option: --concurency"),
        (["--redact", "names"], {}, "error: --redact: 'names' is not a choice; choose 'off' or 'pii'"),
        (["--budget-usd", "-1"], {}, "error: --budget-usd: Input should be greater than 0"),
        (["--plan", "sometimes"], {}, "error: --plan: 'sometimes' is not a choice; choose 'auto', 'code' or 'builtin'"),
        (["--samples", "0"], {}, "error: --samples: Input should be greater than or equal to 1"),
        (["--approve"], {}, "error: --approve: there is no code to review, the supervisor is not asked for any"),
        (["--local", "embedded,m@http://127.0.0.1:9/v1;servers=2"], {}, "servers=N starts embedded model servers"),
        (["--remote", "bogus"], {}, "error: --remote: unknown model spec 'bogus'; model specs look like embedded"),
        (["--data-dir", "/proc/nope"], {}, "error: data folder /proc/nope: No such file or directory"),
        (["-q", "   "], {}, "the question (-q) is empty"),
        (["--sandbox", "docker"], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "no Docker engine answers"),
        (["--sandbox", "bwrap"], {"MINIONFLOW_BWRAP": "/nonexistent/bwrap"}, "bubblewrap is not installed"),
    ],
)
def test_bad_settings_exit_2_before_any_model_call(args, env, message, good_doc, home):
    base = ["run", str(good_doc)] + (["-q", "What happened?"] if "-q" not in args else [])
    result = cli(*base, *args, home=home, env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and len(lines[0]) <= 220, result.stderr
    assert result.stdout == "" and not (home / "embedded-server.log").exists()


def test_command_line_errors_take_the_same_one_line_path(home):
    for args, message in ((["run"], "error: Missing argument 'DOC'. (see minionflow run --help)"),
                          (["show"], "error: Missing argument 'THREAD'. (see minionflow show --help)"),
                          (["frobnicate"], "error: No such command 'frobnicate'.")):
        result = cli(*args, home=home)
        assert (result.returncode, result.stdout, result.stderr.strip()) == (2, "", message), result.stderr
    alone = cli(home=home)
    assert alone.returncode == 0 and "Usage: minionflow" in alone.stdout
    version = cli("--version", home=home)
    assert (version.returncode, version.stdout) == (0, "minionflow 0.2.0\n")
    assert "Usage: minionflow runs" in cli("runs", "-h", home=home).stdout


@pytest.mark.embedded
def test_end_to_end_embedded_both_roles_json(good_doc, home):
    result = cli("run", str(good_doc), "-q", "Why was the north pier closed?", "--json", home=home)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["status"] == "answered"
    assert isinstance(out["answer"], str) and out["answer"].strip()
    assert out["rounds"] == 1  # the embedded-supervisor default
    usage = out["usage"]
    local_calls = [c for c in out["calls"] if c["role"] == "local"]
    remote_calls = [c for c in out["calls"] if c["role"] == "remote"]
    assert usage["local"]["calls"] == len(local_calls) >= 2
    # the embedded supervisor is not asked for code (the built-in plan): it only aggregates
    assert usage["remote"]["calls"] == len(remote_calls) == 1
    assert {c["node"] for c in remote_calls} == {"aggregate"}
    assert any("the supervisor was not asked for code" in n for n in out["notes"])
    for role in ("local", "remote"):
        assert usage[role]["prompt_tokens"] > 0 and usage[role]["completion_tokens"] > 0
        assert usage[role]["prompt_tokens"] == sum(c["prompt_tokens"] for c in out["calls"] if c["role"] == role)
    assert all(c["model"] == "embedded:SmolLM2-135M-Instruct" for c in out["calls"])
    assert usage["local"]["cost_usd"] == 0
    expected_remote = (usage["remote"]["prompt_tokens"] * 2.5 + usage["remote"]["completion_tokens"] * 10) / 1e6
    assert abs(usage["remote"]["cost_usd"] - expected_remote) < 1e-9
    assert usage["remote_only_prompt_tokens"] > 500  # the whole document, counted with tiktoken
    assert usage["savings_ratio"] == pytest.approx(usage["remote_only_cost_usd"] / usage["total_cost_usd"])
    assert (home / "checkpoints.sqlite").exists() and (home / "blobs.sqlite").exists()
    # piped: progress as plain lines on stderr, the JSON alone on stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("progress: ")]
    total = len(local_calls)
    assert f"progress: round 1: minions 0/{total} done; tokens remote" in "\n".join(progress), result.stderr[-2000:]
    assert any(line.startswith(f"progress: round 1: minions {total}/{total} done") for line in progress)
    assert any("supervisor decided: provide_final_answer" in line for line in progress)


@pytest.mark.embedded
def test_end_to_end_human_output_and_openai_compatible_url(good_doc, home):
    """The same server reached as a plain OpenAI-compatible URL: structured output
    method 'auto' finds out that this server rejects json_schema and switches. The
    supervisor's replies are capped at 256 tokens (--remote-max-tokens): at the default
    1,024 how far SmolLM ran on made this test take 49 s to 162 s in CI."""
    from minionflow.serving.embedded import EmbeddedServer, default_gguf

    server = EmbeddedServer(default_gguf(), n_ctx=8192, log_dir=home)
    url = server.start()
    try:
        result = cli("run", str(good_doc), "-q", "How much did the pier repairs cost?",
                     "--remote", f"smollm2@{url}", "--local", f"smollm2@{url}", "--max-rounds", "1",
                     "--max-code-attempts", "1", "--remote-max-tokens", "256", home=home)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Answer:" in out
    for row in ("Usage", "remote", "local", "remote only (est.)", "this run", "thread:"):
        assert row in out, out
    assert "Against sending everything to the remote model: " in out
    log = (home / "minionflow.log").read_text()
    assert "rejected response_format json_schema" in log


def test_waiting_for_review_in_a_pipe_at_80_columns(good_doc, home, openai_server):
    """--approve with no terminal stops with exit 3 and says so on stdout: waiting for
    review, the three answers with the thread id, no failure and no savings claim. The
    supervisor is the scripted one of the test server, so the stop does not depend on
    whether a small model happens to write code."""
    result = cli("run", str(good_doc), "-q", "Why was the pier closed?", "--approve", "--thread", "t-pipe",
                 "--remote", f"gpt-4o@{openai_server.url}", "--local", f"gpt-4o-mini@{openai_server.url}",
                 home=home, env={"COLUMNS": "80"})
    assert result.returncode == 3, result.stderr[-2000:]
    out = " ".join(result.stdout.split())  # Rich folds prose at 80 columns
    assert "Waiting for review of the supervisor's code (round 1, attempt 1)" in out
    for answer in ("--accept", "--reject REASON", "--edit FILE"):
        assert f"minionflow resume t-pipe {answer}" in result.stdout
    assert "failed" not in out and "Against sending" not in out and "rounds finished: 0" in out
    assert [b["model"] for b in openai_server.requests] == ["gpt-4o"]  # the code only: no job ran


@pytest.mark.embedded
def test_killed_cli_leaves_no_model_server_behind(good_doc, home, spawn):
    """A SIGKILL of minionflow ends the embedded server too (its watchdog sees the parent die)."""
    import signal
    import time

    proc = spawn([CLI, "run", str(good_doc), "-q", "Why was the pier closed?"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = home / "embedded-server.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and "POST" in log.read_text()):
        time.sleep(0.2)
    assert "POST" in log.read_text(), "the model server never answered a request"
    watchdogs = subprocess.run(["pgrep", "-f", f"server_watchdog.py {proc.pid} "], capture_output=True, text=True).stdout.split()
    servers = [pid for w in watchdogs for pid in subprocess.run(["pgrep", "-P", w], capture_output=True, text=True).stdout.split()]
    server_pids = watchdogs + servers
    assert len(watchdogs) == 1 and len(servers) == 1, (watchdogs, servers)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    alive = server_pids
    while time.monotonic() < deadline and alive:
        time.sleep(0.5)
        alive = [p for p in server_pids if os.path.exists(f"/proc/{p}")]
    assert server_pids and not alive, f"left behind: {alive}"


def test_the_options_that_shape_a_run_are_declared_once():
    """run, compare, eval and fork take the run options from one table (cli.options): each
    command has the ones it should (every one; all but --approve for the batch commands; what
    a fork may change) with the same flags, help and panel (a fork's read no environment
    variable); resume takes none, since a thread keeps its settings. Every option sets a
    setting, and a settings error names the option."""
    import typer.main
    from minionflow.cli.main import app
    from minionflow.cli.options import ALL, BATCH, FORKABLE, OPTIONS

    group = typer.main.get_group(app)
    expected = {"run": ALL, "compare": BATCH, "eval": BATCH, "fork": FORKABLE, "resume": ()}
    for name, wanted in expected.items():
        params = {p.name: p for p in group.commands[name].params}
        assert {n for n in OPTIONS if n in params} == set(wanted), name
        for option in wanted:
            declared = OPTIONS[option].__metadata__[0]
            param = params[option]
            flag = "--" + option.replace("_", "-")
            # a fork's default is the thread's value, and its help says so instead of the default
            help_text = re.sub(r"\s*\(default[^)]*\)", "", declared.help) + " (default the thread's)" if name == "fork" else declared.help
            assert (param.opts, param.help, getattr(param, "rich_help_panel", None)) == (
                [flag], help_text, declared.rich_help_panel), (name, option)
            # a fork changes what its command line says, not what the environment holds for new runs
            assert param.envvar == (None if name == "fork" else declared.envvar), (name, option)
    from minionflow.cli.options import OPTION_OF_SETTING, SETTING_OF, RunOptions

    assert set(SETTING_OF) == set(OPTIONS) - {"remote", "local"}
    assert {v for v in OPTION_OF_SETTING.values()} == {"--" + n.replace("_", "-") for n in SETTING_OF}
    everything = RunOptions(max_rounds=2, max_code_attempts=2, plan="code", samples=3, chunk_tokens=50,
                            remote_max_tokens=100, local_max_tokens=20, concurrency=3, no_cache=True, max_quote_chars=30,
                            budget_tokens=9, budget_usd=1.5, redact="pii", sandbox="bwrap", sandbox_runtime="runsc",
                            approve=True)
    settings = everything.settings()
    assert (settings.max_rounds, settings.max_code_attempts, settings.plan, settings.samples, settings.chunk_tokens,
            settings.remote_max_tokens, settings.local_max_tokens, settings.local_concurrency, settings.job_cache,
            settings.max_quote_chars, settings.budget_tokens, settings.budget_usd, settings.redact, settings.sandbox,
            settings.sandbox_runtime, settings.approve_code) == (
        2, 2, "code", 3, 50, 100, 20, 3, False, 30, 9, 1.5, "pii", "bwrap", "runsc", True)
