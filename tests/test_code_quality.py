"""The code stays typed (mypy, with the pydantic plugin) and lint-clean (ruff)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_mypy_clean():
    out = subprocess.run([str(BIN / "mypy"), "graphs", "nodes", "sandbox", "cli", "minionflow", "evaluation"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


def test_ruff_clean():
    out = subprocess.run([str(BIN / "ruff"), "check", ".", "--exclude", ".venv"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]
