"""Fixtures of the race detector's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from safemap import race


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
