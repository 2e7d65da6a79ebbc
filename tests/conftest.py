"""Shared fixtures for the protocol test suite.

``MAP_TYPES`` is the registry of mutable map types that every shared test runs against.
Adding a map type is one line below; the native types join automatically when
``safemap.native`` builds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from actor.adapter import BlockingAsyncActorMap  # tests/actor/adapter.py

import safemap

MAP_TYPES: dict[str, type[Any]] = {
    "LockedMap": safemap.LockedMap,
    "RWLockMap": safemap.RWLockMap,
    "ActorMap": safemap.ActorMap,
    "AsyncActorMap": BlockingAsyncActorMap,  # the asyncio map through a thin sync adapter
}

# The native core is built by every install: a missing one must fail, not be skipped.
MAP_TYPES["ConcurrentMap"] = safemap.ConcurrentMap
MAP_TYPES["SyncMap"] = safemap.SyncMap
MAP_TYPES["PersistentMap"] = safemap.PersistentMap


@pytest.fixture(params=list(MAP_TYPES))
def map_type(request: pytest.FixtureRequest) -> type[Any]:
    """Each registered mutable map type in turn (the test id is the type's name)."""
    return MAP_TYPES[request.param]


@pytest.fixture
def fast_switch() -> Iterator[None]:
    """Make the GIL switch threads very often, so races are likely on the GIL build."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


ThreadRunner = Callable[..., list[Any]]


@pytest.fixture
def run_threads() -> ThreadRunner:
    """``run_threads(target, n, *, timeout=30, args_for=None)`` runs ``target(i)`` in ``n``
    daemon threads released together by a ``threading.Barrier``; it returns the results in
    thread order and re-raises the first exception any thread raised. A thread still
    running after ``timeout`` seconds fails the test (a deadlock must not hang the run)."""

    def run(target: Callable[[int], Any], n: int, *, timeout: float = 30.0) -> list[Any]:
        barrier = threading.Barrier(n)
        results: list[Any] = [None] * n
        errors: list[BaseException] = []

        def body(i: int) -> None:
            try:
                barrier.wait(timeout)
                results[i] = target(i)
            except BaseException as exc:
                errors.append(exc)
                barrier.abort()

        threads = [
            threading.Thread(target=body, args=(i,), daemon=True, name=f"worker-{i}")
            for i in range(n)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if errors:
            raise errors[0]
        if alive:
            pytest.fail(f"threads still running after {timeout}s (deadlock?): {alive}")
        return results

    return run
