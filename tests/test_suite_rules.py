"""The suite's own rules. Markers are strict: scripts/test.sh splits the suite by the
``embedded`` marker, so a misspelt one would silently move a test to the other half (on
the other cores, beside no embedded server); it fails the collection instead. No command
a test waits for is given more time than the test itself, so a hung one fails its test
with its own output."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

from conftest import ROOT, SUBPROCESS_TIMEOUT

PYTEST = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]


def collect(tmp_path, marker: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_marked.py"
    test.write_text(f"import pytest\n\n\n@pytest.mark.{marker}\ndef test_one():\n    pass\n")
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(test)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_a_misspelt_marker_fails_the_collection(tmp_path):
    assert "--strict-markers" in PYTEST["addopts"].split()
    known = collect(tmp_path, "embedded")
    assert known.returncode == 0 and "1 test collected" in known.stdout, known.stdout[-2000:]
    misspelt = collect(tmp_path, "embeded")
    assert misspelt.returncode != 0
    assert "'embeded' not found in `markers` configuration option" in misspelt.stdout, misspelt.stdout[-2000:]


def literal_timeouts() -> list[tuple[str, float]]:
    """Every number the tests give as a ``timeout`` (a keyword argument or a parameter's
    default), with where."""
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            pairs: list[tuple[str, ast.expr]] = []
            if isinstance(node, ast.Call):
                pairs = [(k.arg or "", k.value) for k in node.keywords]
            elif isinstance(node, ast.arguments):
                positional = node.posonlyargs + node.args
                pairs = [(a.arg, d) for a, d in zip(positional[len(positional) - len(node.defaults):], node.defaults,
                                                     strict=True)]
                pairs += [(a.arg, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d is not None]
            for name, value in pairs:
                if name == "timeout" and isinstance(value, ast.Constant) and isinstance(value.value, int | float):
                    found.append((f"{path.name}:{value.lineno}", float(value.value)))
    return found


def test_no_command_a_test_waits_for_has_more_time_than_the_test():
    test_timeout = float(PYTEST["timeout"])
    assert SUBPROCESS_TIMEOUT < test_timeout
    found = literal_timeouts()
    assert len(found) > 20  # the scan sees the suite's timeouts
    assert [(where, t) for where, t in found if t >= test_timeout] == []
