"""The linter (ruff, configured in pyproject.toml) finds nothing in the package, the tests,
the examples, the benchmarks and the scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def _ruff() -> list[str]:
    script = Path(sys.executable).parent / "ruff"
    return [str(script)] if script.exists() else [shutil.which("ruff") or "ruff"]


def test_ruff_finds_nothing():
    proc = subprocess.run(_ruff()
                          + ["check", "hybrid", "tests", "examples", "benchmarks", "scripts"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_would_find_an_undefined_name(tmp_path):
    (tmp_path / "bad.py").write_text("def f():\n    return undefined_name\n")
    proc = subprocess.run(_ruff() + ["check", "--config", str(ROOT / "pyproject.toml"),
                                     str(tmp_path / "bad.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "F821" in proc.stdout


def test_ruff_would_find_a_long_line_and_an_undocumented_function(tmp_path):
    """The package's line length (100) and docstring rules are on: a file like the package's
    with a 101-character line and an undocumented public function fails with both."""
    long = "x = " + repr("a" * 95)
    text = f'"""A module."""\n\n{long}\n\n\ndef public():\n    return x\n'
    (tmp_path / "bad.py").write_text(text)
    proc = subprocess.run(_ruff() + ["check", "--config", str(ROOT / "pyproject.toml"),
                                     str(tmp_path / "bad.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "E501" in proc.stdout and "D103" in proc.stdout
