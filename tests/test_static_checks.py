"""The package stays ``mypy --strict`` and ``ruff`` clean (both come with the test extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "safemap"


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not SRC.is_dir(), reason="needs the source tree (run from a checkout)")
def test_mypy_strict_clean() -> None:
    pytest.importorskip("mypy", reason="mypy comes with the 'test' extra")
    result = _run(sys.executable, "-m", "mypy", "--strict", str(SRC))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not SRC.is_dir(), reason="needs the source tree (run from a checkout)")
def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff comes with the 'test' extra")
    result = _run(ruff, "check", str(SRC), str(ROOT / "tests"), str(ROOT / "benchmarks"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(
        ruff, "format", "--check", str(SRC), str(ROOT / "tests"), str(ROOT / "benchmarks")
    )
    assert result.returncode == 0, result.stdout + result.stderr
