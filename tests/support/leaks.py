"""Reference-leak checks: traced memory stays flat over many rounds of operations."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

FLAT = 64 * 1024
"""Bytes of growth a leak check tolerates: a leak of one small object per round over tens
of thousands of rounds exceeds it many times over."""


def traced_growth(step: Callable[[int], object], *, warmup: int, rounds: int) -> int:
    """Run ``step(i)`` ``warmup`` times (caches, free lists, table sizes settle), then
    ``rounds`` times twice with tracemalloc on; return the growth of traced memory over the
    second ``rounds`` (bytes, after a full collection). Use with the ``frozen_heap``
    fixture, so that the collections walk only what the test made."""
    for i in range(warmup):
        step(i)
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(rounds):
            step(i)
        gc.collect()
        mid, _ = tracemalloc.get_traced_memory()
        for i in range(rounds):
            step(i)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return end - mid
