"""A program the metrics tests run in a real subprocess: real maps, worked by real threads
with a known workload, exported on two real HTTP endpoints (prometheus_client's own
``start_http_server`` and ``safemap.metrics.serve``). It prints one JSON line with the
URLs when the workload is done, keeps serving (one map stays busy) and exits when its
standard input closes.

The expected counts of the workload are in ``expected()``, imported by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import threading
from typing import Any

THREADS = 4
KEYS = 200  # inserted, then read, per thread
MISSES = 50  # reads of absent keys, per thread
UPDATES = 60  # per thread
DELETES = 40  # per thread
WRITES_IN_ITERATION = 7  # by the main thread, while an iteration of the map is open
HOT_READS = 500  # of the key "hot", per hot-key reader thread
HOT_READERS = 2
COLD_KEYS = 50  # read once each, beside the hot key
ACTOR_CAPACITY = 256

# The map types exported by the program (the registered name of each is its type's name).
MAP_TYPES = (
    "ConcurrentMap",
    "SyncMap",
    "LockedMap",
    "RWLockMap",
    "ActorMap",
    "AsyncActorMap",  # worked through its thread-safe view, from threads
    "Cache",  # unbounded here: the same exact counts as a map
)
EVICTING_MAXSIZE = 10  # the bounded cache "evicting"
EVICTING_LOADS = 50  # distinct keys loaded through get_or_compute (each evicts one at most)
EVICTING_LOAD_ERRORS = 3


def expected() -> dict[str, int]:
    """The exact counts of the workload on each map of ``MAP_TYPES``."""
    writes_in_iteration = WRITES_IN_ITERATION
    return {
        "hit": THREADS * KEYS,
        "miss": THREADS * MISSES,
        "insert": THREADS * KEYS + writes_in_iteration,
        "update": THREADS * UPDATES,
        "delete": THREADS * DELETES,
        "entries": THREADS * (KEYS - DELETES) + writes_in_iteration,
        "iterations": 1,
        "writes_during_iteration": writes_in_iteration,
    }


def work(m: Any) -> None:
    """The workload: ``THREADS`` threads on disjoint keys, then one iteration during which
    the main thread writes ``WRITES_IN_ITERATION`` new keys."""

    def worker(t: int) -> None:
        for i in range(KEYS):
            m[(t, i)] = i  # insert
        for i in range(KEYS):
            assert m[(t, i)] == i  # hit
        for i in range(MISSES):
            assert m.get((t, -1 - i)) is None  # miss
        for i in range(UPDATES):
            m[(t, i)] = -1 - i  # update (a new value: storing the same object changes nothing)
        for i in range(DELETES):
            del m[(t, i)]  # delete

    _run([threading.Thread(target=worker, args=(t,)) for t in range(THREADS)])
    it = iter(m)
    next(it)
    for i in range(WRITES_IN_ITERATION):
        m[("during", i)] = i
    for _ in it:
        pass


def work_hot(m: Any) -> None:
    """``HOT_READERS`` threads read ``"hot"`` ``HOT_READS`` times each; ``COLD_KEYS`` other
    keys are read once."""
    m["hot"] = 0
    for i in range(COLD_KEYS):
        m[("cold", i)] = i

    def reader() -> None:
        for _ in range(HOT_READS):
            m["hot"]

    _run([threading.Thread(target=reader) for _ in range(HOT_READERS)])
    for i in range(COLD_KEYS):
        m[("cold", i)]


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        if t.is_alive():
            raise SystemExit("a worker thread did not finish")


def main() -> None:
    from prometheus_client import start_http_server

    import safemap
    from safemap import metrics

    loop = asyncio.new_event_loop()  # the AsyncActorMap's owner
    threading.Thread(target=loop.run_forever, name="owner-loop", daemon=True).start()

    async def new_async_map() -> Any:
        return safemap.AsyncActorMap(maxsize=ACTOR_CAPACITY)

    maps: dict[str, Any] = {}
    for name in MAP_TYPES:
        if name == "AsyncActorMap":
            m = asyncio.run_coroutine_threadsafe(new_async_map(), loop).result(timeout=60)
            work(m.threadsafe)
        else:
            cls = getattr(safemap, name)
            m = cls(maxsize=ACTOR_CAPACITY) if name == "ActorMap" else cls()
            work(m)
        metrics.register(m, name)
        maps[name] = m

    hot = safemap.LockedMap()
    hot.track(hot_keys=4, latency_every=1)
    work_hot(hot)
    metrics.register(hot, "hot")

    evicting: safemap.Cache[int, int] = safemap.Cache(EVICTING_MAXSIZE)
    for i in range(EVICTING_LOADS):
        evicting.get_or_compute(i, lambda k: k * k)
    for i in range(EVICTING_LOAD_ERRORS):
        with contextlib.suppress(ZeroDivisionError):
            evicting.get_or_compute(-1 - i, lambda k: 1 // 0)
    metrics.register(evicting, "evicting")

    dropped = safemap.LockedMap(a=1)
    metrics.register(dropped, "dropped")
    del dropped
    gc.collect()

    busy = safemap.ConcurrentMap()
    metrics.register(busy, "busy")
    stop = threading.Event()

    def churn() -> None:  # bounded: stops when told, or after 120 s at most
        for i in range(120_000):
            if stop.wait(0.001):
                return
            busy[i % 100] = i

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()

    prometheus_server, _ = start_http_server(0, addr="127.0.0.1")
    server = metrics.serve(0)
    print(
        json.dumps(
            {
                "prometheus": f"http://127.0.0.1:{prometheus_server.server_port}/metrics",
                "metrics": server.url,
                "hot_keys": server.hot_keys_url,
            }
        ),
        flush=True,
    )
    sys.stdin.read()  # until the test closes our standard input
    stop.set()
    churner.join(timeout=10)
    server.close()
    prometheus_server.shutdown()
    maps["ActorMap"].close()
    aclose = maps["AsyncActorMap"].aclose()
    asyncio.run_coroutine_threadsafe(aclose, loop).result(timeout=60)
    loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    main()
