"""The suite's watchdog (tests/support/watchdog.py): a test that hangs where pytest-timeout
cannot act ends its process with every thread's stack, instead of stalling the run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).parent

HANGING = """
import os
import time

import pytest


@pytest.mark.timeout(1)
def test_quick():
    pass


def test_untimed_and_longer_than_the_last_limit():
    time.sleep(3)  # a watchdog left armed by test_quick would end the process here


@pytest.mark.timeout(1)
def test_hangs_outside_python():
    # The main thread waits inside C (system() retries its wait on EINTR): pytest-timeout's
    # signal handler never gets to run.
    os.system("sleep 15")
"""


def test_a_hang_pytest_timeout_cannot_interrupt_ends_the_process_with_its_stacks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makepyfile(test_hanging=HANGING)
    result = pytester.runpytest_subprocess(
        "-p",
        "support.watchdog",
        "-p",
        "no:cacheprovider",
        "-o",
        "watchdog_grace=1",
        "-v",
        timeout=60,
    )
    assert result.ret == 1  # faulthandler's exit status
    result.stdout.fnmatch_lines(
        ["*test_quick PASSED*", "*test_untimed_and_longer_than_the_last_limit PASSED*"]
    )
    result.stdout.no_fnmatch_line("*test_hangs_outside_python PASSED*")
    result.stdout.no_fnmatch_line("*= * passed*")  # ended before any summary
    result.stderr.fnmatch_lines(
        ["Timeout (0:00:02)!", '*File "*test_hanging.py", line * in test_hangs_outside_python']
    )
