"""Races on a Cache's hits: ``Box`` (a fresh value only the cache references once
stored) and ``writers_then_readers`` (readers that keep reading until every writer is
done)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Box:
    """A fresh value: (key, serial), referenced by the cache alone once stored."""

    __slots__ = ("__weakref__", "key", "serial")

    def __init__(self, key: int, serial: int) -> None:
        self.key = key
        self.serial = serial


def writers_then_readers(
    run_threads: Any,
    writers: list[Callable[[], None]],
    readers: list[Callable[[threading.Event], None]],
    *,
    timeout: float,
) -> None:
    """Run every writer and every reader in a thread of its own, released together (the
    ``run_threads`` fixture); each reader gets an event set once every writer has ended,
    normally or not, and is expected to read until it is set."""
    done = threading.Event()
    lock = threading.Lock()
    left = [len(writers)]

    def ending(write: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                write()
            finally:
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

        return body

    run_threads(
        [ending(w) for w in writers] + [lambda r=r: r(done) for r in readers], timeout=timeout
    )
