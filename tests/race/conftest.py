"""Fixtures of the race detector's tests."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

import safemap
from safemap import race

PTH = Path(__file__).resolve().parents[2] / "src" / "safemap" / "race" / "safemap_race_startup.pth"


@pytest.fixture
def detector() -> Iterator[None]:
    """The detector enabled, with no reports, for the test; restored afterwards."""
    was = race.enabled()
    race.enable()
    race.clear()
    yield
    race.clear()
    if not was:
        race.disable()


@pytest.fixture(scope="session")
def startup_venv(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh venv whose site-packages holds the start-up .pth and (by path .pth files
    that sort before it, as the editable install's ``__editable__`` one does) the directory
    of the safemap under test, built extensions included (the source tree of an editable
    install, site-packages of a regular one), and this interpreter's site-packages (pytest,
    pytest-xdist and safemap's ``pytest11`` entry point): the hook runs exactly as in an
    installed safemap, at interpreter start-up. Returns its python."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    exe = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [exe, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tested = Path(safemap.__file__).resolve().parent.parent
    (Path(purelib) / "_safemap_src.pth").write_text(f"{tested}\n")
    (Path(purelib) / "_safemap_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (Path(purelib) / PTH.name).write_text(PTH.read_text())
    return exe
