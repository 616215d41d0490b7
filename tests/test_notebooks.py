"""The notebooks run end to end against the embedded model (nbclient), each in a
data folder of its own; their assert cells check what they show. Each executed
notebook is saved with its outputs to ``build/notebooks/`` (``scripts/notebooks.sh``
copies them over ``notebooks/``), so the outputs committed are the ones a test run
printed."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, SUBPROCESS_TIMEOUT
from nbclient import NotebookClient

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXECUTED = ROOT / "build" / "notebooks"


def test_there_are_three_notebooks():
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_custom_graph", "03_pause_inspect_resume"]


@pytest.mark.embedded
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MINIONFLOW_HOME", str(tmp_path))  # the kernel inherits it
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=SUBPROCESS_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    text = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "answered" in text
    EXECUTED.mkdir(parents=True, exist_ok=True)
    nbformat.write(book, EXECUTED / path.name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_committed_notebook_shows_a_run(path: Path):
    """Committed with the outputs of a run (scripts/notebooks.sh): every code cell
    executed once, in order, and none of them failed."""
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert [c.get("execution_count") for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    assert "answered" in "".join(o.get("text", "") for o in outputs)
