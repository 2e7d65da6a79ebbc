"""A pytest plugin: no test can hang the run.

pytest-timeout's signal method fails a test that overruns only once the main thread gets
back to running Python code. A wait that never does (a deadlock inside the interpreter or
the native core: a stop-the-world pause that never completes, a native lock never
released) would stall the whole run until CI's own limit, with nothing printed. So each
test also arms faulthandler's watchdog, a C thread: ``watchdog_grace`` seconds after
pytest-timeout should have acted, it prints every thread's stack to the process's real
stderr and ends the process. Under pytest-xdist that process is one worker: the run
reports the test as crashed, starts a new worker and goes on.
"""

from __future__ import annotations

import faulthandler
import os
from collections.abc import Generator
from typing import TextIO

import pytest

_OUTPUT = pytest.StashKey[TextIO]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "watchdog_grace",
        "seconds after a test's pytest-timeout limit at which its process is ended",
        default="60",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The process's own stderr, copied while pytest is not capturing it: during a test,
    # fd 2 is a capture file that a process ended by the watchdog would never show.
    config.stash[_OUTPUT] = os.fdopen(os.dup(2), "w")


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[_OUTPUT].close()


def _limit(item: pytest.Item) -> float:
    """The test's pytest-timeout limit, resolved as pytest-timeout does: its marker, then
    ``--timeout``, then the ini file's ``timeout``; 0 for none."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and (marker.args or "timeout" in marker.kwargs):
        value = marker.args[0] if marker.args else marker.kwargs["timeout"]
    else:
        value = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(value or 0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    limit = _limit(item)
    if not limit:
        return (yield)
    grace = float(item.config.getini("watchdog_grace"))
    faulthandler.dump_traceback_later(limit + grace, exit=True, file=item.config.stash[_OUTPUT])
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()
