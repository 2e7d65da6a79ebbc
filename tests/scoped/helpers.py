"""Helpers of the scoped-entries tests."""

from __future__ import annotations

from typing import Any

import pytest

from safemap.protocol import expiry


def identity_kept(map_type: type[Any]) -> bool:
    """Whether reads of ``map_type`` return the stored object (not RedisMap's copies)."""
    return bool(getattr(map_type, "_value_identity", True))


def count_removals(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record the key of every removal attempt a binding makes (one per ended binding)."""
    calls: list[Any] = []
    original = expiry._MapState.remove

    def remove(self: Any, key: Any, value: Any) -> bool:
        calls.append(key)
        return original(self, key, value)

    monkeypatch.setattr(expiry._MapState, "remove", remove)
    return calls
