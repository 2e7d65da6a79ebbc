"""Fixtures of the metrics tests: the served program (a real subprocess) and ``promtool``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PROGRAM = Path(__file__).with_name("serve_maps.py")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, str]]:
    """Runs ``serve_maps.py`` for one test module (its busy map churns for two minutes at
    most); yields its URLs (``prometheus``, ``metrics``, ``hot_keys``) once its workload is
    done."""
    process = subprocess.Popen(
        [sys.executable, str(PROGRAM)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=120)  # deadlock guard: a hung program fails the tests
    try:
        if not first or not first[0]:
            process.kill()
            _, err = process.communicate(timeout=30)
            pytest.fail(f"serve_maps.py did not start:\n{err}")
        yield json.loads(first[0])
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def promtool() -> str:
    """The ``promtool`` program (Debian's ``prometheus`` package; ``.ci/run`` installs it).
    Missing in CI (``CI=true``) fails; elsewhere it skips with the reason."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: .ci/run must install Debian's prometheus")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path
