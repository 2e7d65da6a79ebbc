"""Fixtures of the scoped-entries and loading-once tests (``docs/scoped.md``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.actor import wait_until

from safemap.protocol import expiry

Closer = Callable[..., None]


@pytest.fixture
def clock() -> Iterator[expiry.ManualClock]:
    """A ``ManualClock`` as the expiry clock for the test (the previous one restored)."""
    fake = expiry.ManualClock(1000.0)
    previous = expiry.set_clock(fake)
    try:
        yield fake
    finally:
        expiry.set_clock(previous)


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """``closing(m)`` returns ``m``; after the test, its pending bindings are dropped and
    it is closed (if it has ``close``)."""
    maps: list[Any] = []

    def register(m: Any) -> Any:
        maps.append(m)
        return m

    yield register
    for m in maps:
        st = expiry._state(m)
        for b in list(st.bindings) if st is not None else ():
            b._forget()  # nothing may try to remove them from a closed map afterwards
    # A removal the sweeper started before that finishes before the maps are closed.
    wait_until(lambda: expiry.sweeper_thread() is None, "the sweeper exits")
    for m in maps:
        getattr(m, "close", lambda: None)()


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """The exceptions reported to ``sys.unraisablehook`` during the test."""
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args.exc_value))
    return seen
