"""Helpers of the actor tests: a gate to hold an owner busy, and waiting for a condition."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

WAIT = 10.0
"""Upper bound for waiting on something that must happen; a hang fails instead."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` until it holds; fail (never hang) if it does not within
    ``timeout``. Used to wait for a state, never to measure time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.001)


class Gate:
    """Holds an ActorMap's owner inside a request until ``open()``.

    ``m.execute(gate.hold)`` (in a background thread) occupies the owner; ``entered`` says
    the owner is inside, so everything submitted afterwards stays queued."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._release = threading.Event()

    def hold(self, d: dict[Any, Any]) -> str:
        self.entered.set()
        if not self._release.wait(WAIT):
            raise AssertionError("gate never opened")
        return "held"

    def open(self) -> None:
        self._release.set()


class Background:
    """Run a call in a daemon thread and collect its result or exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self.result = fn(*args, **kwargs)
        except BaseException as exc:
            self.error = exc

    def join(self) -> Background:
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "background call did not finish (deadlock?)"
        return self

    def value(self) -> Any:
        self.join()
        if self.error is not None:
            raise self.error
        return self.result
