"""Helpers shared by the race detector's tests (not a test module).

They order threads only with ``Thread.start``/``join`` (edges the detector models) or not
at all (``concurrently``: a polled flag, which is no synchronization).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def in_thread(fn: Callable[[], Any], name: str = "worker-1") -> threading.Thread:
    """Start ``fn`` in a new thread (ordered after the caller's past by ``start``)."""
    t = threading.Thread(target=fn, name=name)
    t.start()
    return t


def run_thread(fn: Callable[[], Any], name: str = "worker-1") -> None:
    """Run ``fn`` in a new thread and join it: ordered both ways with the caller."""
    in_thread(fn, name).join()


def concurrently(
    child: Callable[[], Any], parent: Callable[[], Any], name: str = "worker-1"
) -> None:
    """``child`` in a new thread, ``parent`` here after the child finished (in real time,
    without any happens-before edge: the child is awaited by polling a plain flag), then
    join. The two are unordered, and the child ran first."""
    done: list[bool] = []

    def body() -> None:
        try:
            child()
        finally:
            done.append(True)

    t = in_thread(body, name)
    while not done:
        _sleep()
    parent()
    t.join()


def _sleep() -> None:
    import time

    time.sleep(0.001)
