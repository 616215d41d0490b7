from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeProvider, PromptFake  # noqa: E402
from minionflow.graphs import RunContext, RunSettings, build_minions_graph  # noqa: E402
from minionflow.graphs.run import all_usage, run_config  # noqa: E402
from minionflow.nodes.ingest import initial_state  # noqa: E402
from minionflow.sandbox import BwrapBackend  # noqa: E402
from minionflow.storage.documents import LoadedDocument  # noqa: E402
from minionflow.storage.store import get_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv's scripts
CLI = str(BIN / "minionflow")
# A command a test waits for gets less time than the test itself (pyproject's pytest
# timeout, 600 s): one that hangs fails the test with its own command and output, and is
# killed by subprocess.run, instead of pytest-timeout stopping the test around it.
SUBPROCESS_TIMEOUT = 480
# the folders the installed packages come from (minionflow, graphs, nodes, ...): pyproject.toml's
# package-dir, which the type check, the layer check and scripts/setup.sh's compile all read
# the top-level folders of the packages (pyproject.toml's package-dir; nodes/support is in nodes)
PACKAGE_DIRS = tuple(sorted({path.split("/")[0] for path in
                             tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()}))


def cli_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no OpenAI key (the embedded model is
    the default remote), wide lines, and its own data folder."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["COLUMNS"] = "200"
    if home is not None:
        env["MINIONFLOW_HOME"] = str(home)
    env.update(extra)
    return env


GOOD_CODE = r'''```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    jobs = []
    for doc in context:
        for i, chunk in enumerate(doc.split("\n\n")):
            jobs.append(JobManifest(chunk=chunk, task="Find the secret number", chunk_id=i, task_id=0))
    return jobs
```'''


def worker_json(answer: str | None, citation: str | None = None, explanation: str = "read it") -> str:
    return json.dumps({"explanation": explanation, "citation": citation, "answer": answer})


def final_json(answer: str = "42", decision: str = "provide_final_answer", feedback: str | None = None,
               scratchpad: str | None = None) -> str:
    return json.dumps({"decision": decision, "answer": answer, "explanation": "from the minions",
                       "feedback": feedback, "scratchpad": scratchpad})


def until_last_round(prompt: str) -> str:
    """A supervisor that writes GOOD_CODE and asks for another round until the last one."""
    if "Write prepare_jobs now" in prompt:
        return GOOD_CODE
    if "This is the last round" in prompt:
        return final_json()
    return final_json(decision="request_additional_info", feedback="look again")


def secret_doc(paragraphs: int = 12, secret_at: int = 7) -> LoadedDocument:
    parts = [f"Paragraph {i} talks about harbours, cranes and weather in general terms." for i in range(paragraphs)]
    parts[secret_at] = "The secret number is 42, written in the ledger."
    return LoadedDocument(title="ledger.txt", text="\n\n".join(parts), pages=1)


def default_local(prompt: str) -> str:
    chunk = prompt.split('"""')[1] if '"""' in prompt else prompt
    if "secret number is 42" in chunk:
        return worker_json("42", "The secret number is 42")
    return worker_json(None, None, "not in this part")


def default_remote(prompt: str) -> str:
    if "Write prepare_jobs now" in prompt:
        return GOOD_CODE
    return final_json()


@dataclass
class Run:
    values: dict[str, Any]
    remote: PromptFake
    local: PromptFake
    events: list[dict[str, Any]]
    store: Any
    # (message, metadata) pairs of LangGraph's "messages" stream, when the run asked for it
    messages: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    @property
    def usage(self) -> list[dict[str, Any]]:
        return all_usage(self.values, self.store)

    def results(self) -> list[dict[str, Any]]:
        """Every job result of every round."""
        return [r for rec in self.values["rounds"] for r in get_json(self.store, rec["results_ref"])]

    def kept(self, round_: int) -> list[dict[str, Any]]:
        return get_json(self.store, self.values["rounds"][round_ - 1]["kept_ref"])

    def remote_prompts(self, marker: str = "") -> list[str]:
        return [p for p in self.remote.prompts if marker in p]


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[Any]]]:
    """``subprocess.Popen`` for a test: whatever is still running when the test ends
    (an assertion failed before the test stopped it) is killed."""
    started: list[subprocess.Popen[Any]] = []

    def _spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(*args, **kwargs)
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="session")
def bwrap() -> BwrapBackend:
    backend = BwrapBackend()
    backend.check()  # fails loudly (no skip) when bubblewrap cannot run
    return backend


@pytest.fixture
def run_fake(bwrap: BwrapBackend) -> Callable[..., Run]:
    def _run(
        remote: Callable[[str], str] = default_remote,
        local: Callable[[str], str] = default_local,
        documents: list[LoadedDocument] | None = None,
        task: str = "What is the secret number?",
        local_delay: float = 0.0,
        checkpointer: Any = None,
        store: Any = None,
        reply: str | None = None,
        local_spec: str = "embedded",
        stream_messages: bool = False,
        **settings: Any,
    ) -> Run:
        settings["local"] = local_spec
        if reply is not None:  # the local model's reply format (the embedded spec's default: text)
            settings["local"] += f";reply={reply}"
        settings.setdefault("chunk_tokens", 40)
        settings.setdefault("max_chunk_chars", 4000)
        s = RunSettings(**settings)
        remote_fake = PromptFake(responder=remote)
        local_fake = PromptFake(responder=local, delay_s=local_delay)
        store = store or InMemoryStore()
        graph = build_minions_graph(checkpointer=checkpointer or InMemorySaver(), store=store)
        context = RunContext(settings=s, models=FakeProvider(remote_fake, local_fake), sandbox=bwrap)
        state = initial_state(store, documents or [secret_doc()], task, s)
        config = run_config("test-thread", s)
        modes = ["custom", "messages"] if stream_messages else ["custom"]
        parts = list(graph.stream(state, config, context=context, stream_mode=modes, durability="sync", subgraphs=True))
        events = [data for _ns, mode, data in parts if mode == "custom"]
        messages = [data for _ns, mode, data in parts if mode == "messages"]
        return Run(graph.get_state(config).values, remote_fake, local_fake, events, store, messages)

    return _run


# --- where threads live: the resume / inspect / fork tests run on both -------------

# scripts/test.sh starts Debian's PostgreSQL and exports this URL; without a server
# the PostgreSQL cases fail (they are never skipped).
POSTGRES_URL = os.environ.get("MINIONFLOW_TEST_POSTGRES", "postgresql://minionflow:minionflow@127.0.0.1:5432/minionflow")


@dataclass
class Where:
    """A checkpoint location for a test: a folder (SQLite) or a PostgreSQL database.
    ``home`` is the data folder (log, embedded-server log) in both cases."""

    kind: str
    location: Path | str
    home: Path

    def cli_args(self) -> list[str]:
        args = ["--data-dir", str(self.home)]
        return args + (["--checkpoint", str(self.location)] if self.kind == "postgres" else [])

    def copy(self, home: Path) -> Where:
        """An independent copy of every thread (a folder copy, or CREATE DATABASE ... TEMPLATE)."""
        import shutil

        if self.kind == "sqlite":
            shutil.copytree(self.home, home)
            return Where("sqlite", home, home)
        home.mkdir(parents=True, exist_ok=True)
        return Where("postgres", create_database(template=str(self.location)), home)


def _admin() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)


def create_database(template: str | None = None) -> str:
    """A fresh database (owned by the test role) and its URL."""
    import uuid

    from psycopg import sql

    name = f"mf_test_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template.rsplit("/", 1)[1]))
        conn.execute(query)
    _created.append(name)
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


_created: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Any:
    yield
    if not _created:
        return
    from psycopg import sql

    with _admin() as conn:
        for name in _created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def make_where(kind: str, home: Path) -> Where:
    return Where("sqlite", home, home) if kind == "sqlite" else Where("postgres", create_database(), home)


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """An empty checkpoint location of each kind."""
    return make_where(request.param, tmp_path / "home")


@pytest.fixture
def openai_server() -> Iterator[Any]:
    """A real OpenAI-compatible HTTP server (tests/openai_server.py) with a prompt-derived
    supervisor ("gpt-4o") and minion ("gpt-4o-mini"); its URL is ``.url``."""
    from openai_server import OpenAIServer

    with OpenAIServer({"gpt-4o": default_remote, "gpt-4o-mini": default_local}) as srv:
        srv.url = srv.start()
        yield srv
