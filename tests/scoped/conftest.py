"""Fixtures of the scoped-entries and loading-once tests (``docs/scoped.md``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

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
    """``closing(m)`` returns ``m`` and closes it (if it has ``close``) after the test."""
    maps: list[Any] = []

    def register(m: Any) -> Any:
        maps.append(m)
        return m

    yield register
    for m in maps:
        getattr(m, "close", lambda: None)()


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """The exceptions reported to ``sys.unraisablehook`` during the test."""
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args.exc_value))
    return seen
