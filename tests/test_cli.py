"""The ``safemap`` command: ``--version`` and ``--help``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

TIMEOUT = 60


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)


# The console script sits next to the interpreter that installed safemap (the venv's
# bin/), whether or not that directory is on PATH.
_SCRIPT = Path(sys.executable).with_name("safemap")
COMMANDS = [
    pytest.param([sys.executable, "-m", "safemap"], id="python-m-safemap"),
    pytest.param([str(_SCRIPT)], id="console-script"),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_version(command: list[str]) -> None:
    result = _run([*command, "--version"])
    assert result.returncode == 0, result.stderr
    assert version("safemap") in result.stdout
    assert "safemap" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: list[str]) -> None:
    result = _run([*command, "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert "--version" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_fails(command: list[str]) -> None:
    result = _run([*command, "--no-such-option"])
    assert result.returncode != 0
    assert result.stderr


def test_version_matches_package() -> None:
    import safemap

    assert safemap.__version__ == version("safemap")


def test_info_lists_every_map_type_in_plain_text() -> None:
    result = _run([sys.executable, "-m", "safemap", "info"])
    assert result.returncode == 0, result.stderr
    for name in (
        "ConcurrentMap",
        "SyncMap",
        "LockedMap",
        "RWLockMap",
        "ActorMap",
        "AsyncActorMap",
        "FrozenMap",
    ):
        assert f"  {name} " in result.stdout
    # A terminal shows no reST markup.
    assert "``" not in result.stdout and ":class:" not in result.stdout
