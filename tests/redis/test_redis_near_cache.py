"""The near cache: hits served locally, kept fresh by invalidation, flushed on a lost
invalidation connection; compound operations always go to the server."""

from __future__ import annotations

import operator
import time
from typing import Any

import pytest
from support.interrupts import interrupted_while_contending, needs_main_thread_signals

from safemap.redis import RedisMap

pytestmark = pytest.mark.timeout(60)


def _eventually(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 10  # a deadlock guard, not a timing assertion
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.005)


def test_hits_are_served_locally_and_own_writes_are_read(url: str) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 1}, url=url, near_cache=True)
    near = m._near
    assert near is not None
    assert m["a"] == 1
    misses = near.misses
    for _ in range(50):
        assert m["a"] == 1
    assert near.misses == misses  # all served locally
    m["a"] = 2  # this handle's own write: read back at once
    assert m["a"] == 2
    assert m.merge("a", 1, operator.add) == 3 and m["a"] == 3
    assert "zzz" not in m and "zzz" not in m  # absence is cached too
    m.close()


def test_cached_mutable_values_are_never_shared(url: str) -> None:
    m: RedisMap[str, Any] = RedisMap({"l": [1], "d": {"a": 1}}, url=url, near_cache=True)
    for _ in range(3):
        got = m["l"]
        got.append(2)  # the caller's copy only
        m.get("d")["b"] = 2
    assert m["l"] == [1] and m["d"] == {"a": 1}
    m.close()


def test_another_clients_write_invalidates(url: str, raw: Any) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 1}, url=url, near_cache=True)
    writer: RedisMap[str, int] = RedisMap(url=url, name=m.name)
    for i in range(20):
        assert m["a"] == 1 + i
        writer["a"] = 2 + i
        _eventually(lambda i=i: m["a"] == 2 + i, "the invalidation reached the cache")
    # Compound operations read the server, never the cache.
    raw.hset(m.name, b'"a"', b"100")
    assert m.compare_and_swap("a", 100, 101)
    assert m.compute("a", lambda _k, old: old + 1) == 102
    assert m.snapshot()["a"] == 102
    m.close()


def test_lost_invalidation_connection_flushes_and_recovers(url: str, raw: Any) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 1}, url=url, near_cache=True)
    near = m._near
    assert near is not None and m["a"] == 1
    listing = raw.execute_command("CLIENT", "LIST")
    listing = listing if isinstance(listing, bytes) else listing.encode()
    ids = [
        line.split(b" ")[0].split(b"=")[1] for line in listing.splitlines() if b" sub=1 " in line
    ]
    assert ids
    for client_id in ids:
        raw.execute_command("CLIENT", "KILL", "ID", client_id)
    raw.hset(m.name, b'"a"', b"5")  # written while no invalidation can reach the cache
    _eventually(lambda: m["a"] == 5, "the cache was flushed after the drop")
    _eventually(lambda: near._healthy, "tracking was set up again")
    raw.hset(m.name, b'"a"', b"6")
    _eventually(lambda: m["a"] == 6, "invalidations flow again")
    m.close()


def test_missed_ping_flushes_and_bypasses_the_cache(private_server: Any) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 1}, url=private_server.url, near_cache=True, timeout=1)
    near = m._near
    assert near is not None and m["a"] == 1 and near.values
    private_server.pause()  # the listener's PING goes unanswered
    try:
        _eventually(lambda: not near._healthy, "the missed PING was noticed")
        assert not near.values  # flushed: nothing stale can be served
    finally:
        private_server.resume()
    _eventually(lambda: near._healthy, "tracking was set up again")
    m.close()


def test_lost_tracking_connection_is_set_up_again(url: str, raw: Any) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 1}, url=url, near_cache=True)
    near = m._near
    assert near is not None and m["a"] == 1
    near._tracking.disconnect()  # the reading connection breaks
    m["b"] = 2  # empties the cache, so the next read uses the broken connection
    assert m["a"] == 1  # served from the server (an idempotent read is retried)
    _eventually(lambda: near._healthy, "tracking was set up again")
    assert m["a"] == 1 and m["a"] == 1 and near.values  # cached again
    raw.hset(m.name, b'"a"', b"3")
    _eventually(lambda: m["a"] == 3, "invalidations flow on the new connections")
    m.close()


@needs_main_thread_signals
# The interrupt may land in a finalizer run meanwhile (a socket's __del__): reported as
# unraisable, as Python does for a real Ctrl-C.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_interrupts_leave_the_near_cache_usable(url: str, fast_switch: None) -> None:
    """Reads through the near cache (hits, misses, absent keys) and writes, interrupted at
    arbitrary points of the main thread while other threads do the same: no lock is left
    held, every completed write is counted, and afterwards hits are served locally again."""
    m: RedisMap[str, Any] = RedisMap({"n": 0, "r": "x"}, url=url, near_cache=True)
    near = m._near
    assert near is not None

    def op() -> None:
        assert m["r"] == "x" and m.get("absent") is None
        m.merge("n", 1, operator.add)  # empties the cache: the next reads miss

    workers, per_worker = 2, 500
    main_done, interrupts = interrupted_while_contending(op, op, workers, per_worker)
    total = m["n"]
    assert (
        workers * per_worker + main_done <= total <= workers * per_worker + main_done + interrupts
    )

    def served_locally() -> bool:
        misses = near.misses
        return bool(m["r"] == "x" and near.misses == misses)

    _eventually(served_locally, "a hit served by the near cache")
    m.close()
