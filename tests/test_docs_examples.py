"""Every ```python block of the README and the guides in ``DOCS`` runs: a file's blocks in order, in one
namespace, in a temporary folder (its own ``MINIONFLOW_HOME``), the way a reader pastes them
into a file or a notebook. A block that raises fails the test, naming the file, the block and
its line; so does a block that asserts nothing (each shows what it does with an ``assert``).

The doc's code makes its run context as a user does, ``RunContext(settings=...)``: the test
swaps the one place minionflow makes model clients when none are given
(``DefaultModelProvider``) for deterministic fakes whose replies derive from the prompt (the
supervisor writes code that gives every paragraph to a minion with the question, then
answers with the first answer it is forwarded; a minion quotes the sentence of its text that
says why something closed), and the sandbox the settings choose for bubblewrap. Protocols a
guide registers are forgotten after it."""

from __future__ import annotations

import ast
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import minionflow.sandbox
import pytest
from conftest import ROOT, final_json, worker_json
from fakes import FakeProvider, PromptFake
from minionflow.graphs import protocols
from minionflow.nodes.support import context as context_module
from minionflow.sandbox import BwrapBackend

# the guides whose Python blocks must run (paths from the repository's root)
DOCS = ["README.md", "docs/extending.md"]

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    line: int  # of its first line of code, in the file
    code: str


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a markdown text, in order (other languages are not run)."""
    return [Block(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


class DocExampleError(AssertionError):
    """A block of a guide that raised, or that asserts nothing."""


def run_blocks(name: str, text: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the text's Python blocks in order in one namespace; the namespace after the last."""
    namespace = {"__name__": "docs_example"} if namespace is None else namespace
    blocks = python_blocks(text)
    if not blocks:
        raise DocExampleError(f"{name} has no ```python block")
    for i, block in enumerate(blocks, 1):
        where = f"{name}, block {i} (line {block.line})"
        tree = ast.increment_lineno(ast.parse(block.code, filename=name), block.line - 1)  # tracebacks: the file's lines
        if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
            raise DocExampleError(f"{where} asserts nothing: show what it does with an assert")
        try:
            exec(compile(tree, name, "exec"), namespace)  # noqa: S102 - the guide's own code, as a reader runs it
        except Exception as exc:
            frames = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None))
            raise DocExampleError(f"{where} raised {type(exc).__name__}: {exc}\n{frames}") from exc
    return namespace


# --- the fake models ------------------------------------------------------------------

CODE = '''```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    return [JobManifest(chunk=paragraph, task={task!r}, chunk_id=i, task_id=0)
            for doc in context for i, paragraph in enumerate(doc.split("\\n\\n"))]
```'''


def supervisor(prompt: str) -> str:
    """Writes code that gives every paragraph to a minion with the question; then answers
    with the first answer it is forwarded (the most relevant)."""
    if "Write prepare_jobs now" in prompt:
        task = re.search(r"^Task: (.*)$", prompt, re.MULTILINE)
        assert task is not None, prompt[-500:]
        return CODE.format(task=task.group(1))
    answers = re.findall(r"^    answer: (.*)$", prompt, re.MULTILINE)
    return final_json(answers[0] if answers else "The documents do not say.")


def closing_sentence(text: str) -> str | None:
    """The first sentence of the text that says something closed."""
    return next((s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if "closed" in s), None)


def reader(prompt: str) -> str:
    """A minion (a text between triple quotes: JSON with its quote) or a model that reads the
    documents whole (plain text)."""
    if '"""' in prompt:
        sentence = closing_sentence(prompt.split('"""')[1])
        return worker_json(sentence, sentence, "the text says so") if sentence else worker_json(None)
    return closing_sentence(prompt) or "The text does not say."


@pytest.fixture
def fake_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bwrap: BwrapBackend) -> FakeProvider:
    provider = FakeProvider(PromptFake(responder=supervisor), PromptFake(responder=reader))
    monkeypatch.setattr(context_module, "DefaultModelProvider", lambda: provider)
    monkeypatch.setattr(minionflow.sandbox, "get_backend", lambda name="auto", runtime=None: bwrap)
    monkeypatch.setattr(protocols, "_registered", dict(protocols._registered))
    monkeypatch.setenv("MINIONFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "samples").symlink_to(ROOT / "samples")  # the README reads the shipped sample report
    monkeypatch.chdir(tmp_path)
    return provider


@pytest.mark.parametrize("doc", DOCS)
def test_the_python_blocks_of_the_guide_run(doc: str, fake_world: FakeProvider) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    failure = None
    try:
        run_blocks(doc, text)
    except DocExampleError as exc:
        failure = str(exc)
    if failure is not None:  # outside the except: the report is the block's traceback alone
        pytest.fail(failure, pytrace=False)
    remote, local = fake_world.fakes["remote"], fake_world.fakes["local"]
    assert remote.prompts and local.prompts  # the guide's runs went through the fakes, not real models


def test_a_block_that_raises_or_asserts_nothing_fails_with_its_place() -> None:
    good = "Intro.\n\n```python\nx = 1\nassert x == 1\n```\n\n```toml\n[not] = 'python'\n```\n"
    assert [b.line for b in python_blocks(good)] == [4]
    assert run_blocks("good.md", good)["x"] == 1
    with pytest.raises(DocExampleError, match=r"bad\.md, block 2 \(line 13\) raised AssertionError") as raised:
        run_blocks("bad.md", good + "\n```python\nassert x == 2\n```\n")
    assert 'File "bad.md", line 13' in str(raised.value)  # the traceback points into the file
    with pytest.raises(DocExampleError, match=r"quiet\.md, block 1 \(line 2\) asserts nothing"):
        run_blocks("quiet.md", "```python\nx = 1\n```\n")
    with pytest.raises(DocExampleError, match="has no"):
        run_blocks("empty.md", "no code here\n")
