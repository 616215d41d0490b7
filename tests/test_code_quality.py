"""The code stays typed (mypy, with the pydantic plugin), lint-clean (ruff), and its
layers point one way (import-linter)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, PACKAGE_DIRS, ROOT

# about 70 s of one core: in CI they run in the embedded model's half, which finishes first
pytestmark = pytest.mark.beside_embedded


def test_mypy_clean():
    assert set(PACKAGE_DIRS) >= {"minionflow", "contracts", "nodes", "sandbox", "graphs", "cli"}
    out = subprocess.run([str(BIN / "mypy"), *PACKAGE_DIRS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]
    assert re.search(r"Success: no issues found in \d+ source files", out.stdout), out.stdout[-2000:]


def test_ruff_clean():
    out = subprocess.run([str(BIN / "ruff"), "check", ".", "--exclude", ".venv"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


PACKAGES = set(PACKAGE_DIRS) - {"minionflow"}


def _lint_imports(tmp_path: Path, inject: tuple[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """import-linter's contracts from pyproject.toml, on the package laid out as installed
    (the repository maps ``minionflow.graphs`` to ``graphs/``, which import-linter cannot
    walk). ``inject`` appends a line to one module: the negative control."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "minionflow", tree / "minionflow")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tree / "minionflow" / name, ignore=shutil.ignore_patterns("__pycache__", "Dockerfile"))
    if inject:
        module, line = inject
        with open(tree / "minionflow" / module, "a") as f:
            f.write("\n" + line + "\n")
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(BIN / "lint-imports")], cwd=tree, capture_output=True, text=True, env=env)


def test_layers_point_one_way(tmp_path):
    out = _lint_imports(tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout


@pytest.mark.parametrize("module, line", [
    ("nodes/filter.py", "import minionflow.graphs.run  # noqa"),
    ("contracts/state.py", "from minionflow.storage import store  # noqa"),
    ("serving/tokens.py", "from minionflow.nodes.support import common  # noqa"),
    ("storage/store.py", "from minionflow.serving import tokens  # noqa"),
    ("nodes/decompose.py", "from minionflow.nodes import aggregate  # noqa"),
    ("nodes/support/outputs.py", "from minionflow.nodes import filter  # noqa"),
    ("cli/common.py", "from minionflow.cli import threads  # noqa"),
])
def test_an_upward_import_breaks_a_contract(tmp_path, module, line):
    out = _lint_imports(tmp_path, inject=(module, line))
    assert out.returncode == 1 and "BROKEN" in out.stdout, out.stdout[-2000:]


DOCUMENTED_PACKAGES = ("contracts", "sandbox", "storage", "serving", "nodes", "graphs", "evaluation", "cli")
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _doc_section(path: Path, title: str) -> str:
    """The ``## title`` section of a Markdown file, up to the next ``## `` heading."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_the_architecture_lists_every_module():
    """docs/architecture.md's "Modules" names every module of the packages (``dir/name.py``,
    package ``__init__.py`` files aside), and every ``.py`` path it names exists: a new
    module must be described, a deleted one cannot linger."""
    section = _doc_section(ARCHITECTURE, "Modules")
    modules = {path.relative_to(ROOT).as_posix()
               for package in DOCUMENTED_PACKAGES for path in (ROOT / package).rglob("*.py")
               if path.name != "__init__.py" and "__pycache__" not in path.parts}
    assert len(modules) > 30, sorted(modules)  # the globbing found the packages
    named = set(re.findall(r"(?<![\w./-])((?:[\w-]+/)+[\w-]+\.py)\b", section))
    missing = sorted(modules - named)
    assert not missing, f"docs/architecture.md's 'Modules' does not list: {missing}"
    gone = sorted(path for path in named if not (ROOT / path).is_file())
    assert not gone, f"docs/architecture.md's 'Modules' names files that do not exist: {gone}"


def test_the_cli_starts_without_the_model_client_libraries():
    """openai, rapidfuzz and snowballstemmer load when a model client is made or a reply
    is grounded: a `--help`, a bad input or `minionflow runs` does not pay for them."""
    probe = "import sys, minionflow.cli.main; print(sorted({'openai', 'rapidfuzz', 'snowballstemmer'} & set(sys.modules)))"
    out = subprocess.run([str(BIN / "python"), "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
