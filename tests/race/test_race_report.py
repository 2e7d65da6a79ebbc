"""Report text (Go's layout, exactly), RaceReport attributes, deduplication, history
eviction and thread creation sites."""

from __future__ import annotations

import os
import threading

import pytest
from support.race import concurrently

from safemap import race
from safemap.race import _runtime

HERE = os.path.abspath(__file__)


def line_of(marker: str) -> int:
    """The line of this file that holds ``# <marker>``."""
    with open(HERE) as f:
        for n, text in enumerate(f, 1):
            if text.rstrip().endswith(f"# {marker}") and "line_of(" not in text:
                return n
    raise AssertionError(marker)


pytestmark = pytest.mark.usefixtures("detector")  # tests/race/conftest.py


class Cache:
    def __init__(self) -> None:
        self._d = race.watch({}, name="cache")

    def put(self, key: str, value: object) -> None:
        self._d[key] = value  # PUT

    def get(self, key: str) -> object:
        return self._d.get(key)  # GET


def test_exact_layout() -> None:
    cache = Cache()
    done: list[bool] = []

    def run() -> None:
        cache.put("user:42", 1)  # RUN
        done.append(True)

    t = threading.Thread(target=run, name="worker-1")
    t.start()  # START
    while not done:
        pass
    t.join()  # the race is on the main thread's get below, which is after the join...
    # ...so make a second, unjoined thread for the reported pair.
    done.clear()
    t2 = threading.Thread(target=run, name="worker-2")
    t2.start()  # START2
    while not done:
        pass
    cache.get("user:42")  # MAIN
    t2.join()
    reports = race.reports()
    assert len(reports) == 1
    r = reports[0]
    assert (r.map_name, r.key, r.kind) == ("cache", "user:42", "read/write")
    assert r.current.thread_name == "MainThread" and r.current.operation == "get"
    assert r.previous.thread_name == "worker-2" and r.previous.operation == "d[k] = v"
    tid = r.previous.thread_id
    assert tid > 0 and r.current.thread_id == 0
    f = HERE
    text = str(r)
    assert text.startswith("==================\nWARNING: DATA RACE\n")
    assert text.endswith("\n==================\n")
    body = text[len("==================\nWARNING: DATA RACE\n") : -len("==================\n")]
    current, previous, created = body.rstrip("\n").split("\n\n")
    cur = current.split("\n")
    assert cur[:4] == [
        "Read at map 'cache' key 'user:42' by main thread:",
        f"  {f}:{line_of('GET')} in get",
        "    return self._d.get(key)  # GET",  # the source line, under the first frame only
        f"  {f}:{line_of('MAIN')} in test_exact_layout",
    ]
    assert all(line.startswith("  ") and " in " in line for line in cur[4:])  # pytest's
    prev = previous.split("\n")
    assert prev[:3] == [
        f"Previous write at map 'cache' key 'user:42' by thread T{tid} (worker-2):",
        f"  {f}:{line_of('PUT')} in put",
        f"  {f}:{line_of('RUN')} in run",
    ]
    assert all(line.startswith("  ") and " in " in line for line in prev[3:])
    assert all(not line.startswith("    ") for line in prev)  # no source lines there
    rest = created.split("\n")
    # The thread may or may not have finished when the race was found (it was awaited by
    # polling a flag, not joined).
    status = "finished" if r.previous_thread_finished else "running"
    assert rest[0] == f"Thread T{tid} ({status}) created at:"
    assert rest[1] == f"  {f}:{line_of('START2')} in test_exact_layout"
    assert text.endswith("==================\n")
    assert text.count("==================") == 2


def test_both_creation_sites_and_finished_status() -> None:
    d = race.watch({}, name="m")
    release = threading.Event()  # not used for ordering: only waited on after the race
    first_done: list[bool] = []

    def first() -> None:
        d["k"] = 1  # FIRST
        first_done.append(True)

    def second() -> None:
        while not first_done:
            pass
        d["k"] = 2  # SECOND

    t1 = threading.Thread(target=first, name="alpha")
    t1.start()  # START-ALPHA
    t2 = threading.Thread(target=second, name="beta")
    t2.start()  # START-BETA
    t1.join()
    t2.join()
    release.set()
    (r,) = race.reports()
    assert r.kind == "write/write"
    text = str(r)
    cur, prev = r.current.thread_id, r.previous.thread_id
    assert f"Write at map 'm' key 'k' by thread T{cur} (beta):" in text
    assert f"Previous write at map 'm' key 'k' by thread T{prev} (alpha):" in text
    block = (
        f"Thread T{cur} (running) created at:\n  {HERE}:{line_of('START-BETA')} in "
        "test_both_creation_sites_and_finished_status\n"
    )
    assert block in text
    assert f"Thread T{prev} (finished) created at:\n  {HERE}:{line_of('START-ALPHA')}" in text
    assert text.index(f"Thread T{cur}") < text.index(f"Thread T{prev}")


def test_shape_conflict_names_the_key_set() -> None:
    d = race.watch({}, name="sizes")
    concurrently(lambda: len(d), lambda: d.__setitem__("x", 1))
    (r,) = race.reports()
    assert r.key is None and r.kind == "observation/write"
    assert "Write at map 'sizes' key set by main thread:" in str(r)
    assert "Previous read at map 'sizes' key set by thread T" in str(r)


def test_iteration_and_atomic_headers() -> None:
    d = race.watch({"a": 1}, name="m")
    concurrently(lambda: d.get("a"), lambda: d.pop("a"))
    concurrently(lambda: list(d), lambda: d.__setitem__("b", 1))
    text = "".join(str(r) for r in race.reports())
    assert "Atomic operation at map 'm' key 'a' by main thread:" in text
    assert "Previous iteration at map 'm' key set by thread T" in text


def test_key_repr_is_used() -> None:
    d = race.watch({}, name="m")
    concurrently(lambda: d.get((1, "x")), lambda: d.__setitem__((1, "x"), 0))
    assert "key (1, 'x') by main thread" in str(race.reports()[0])


def test_dedup_by_unordered_pair_of_sites() -> None:
    d = race.watch({}, name="m")

    def child() -> None:
        for i in range(5):
            d[i] = i  # the same site for every key

    def parent() -> None:
        for i in range(5):
            d.get(i)

    concurrently(child, parent)
    assert len(race.reports()) == 1  # five races, one pair of sites
    # The same pair of sites the other way round (the reader first) is the same pair.
    e = race.watch({}, name="e")
    concurrently(
        lambda: [e.get(i) for i in range(3)], lambda: [e.__setitem__(i, 0) for i in range(3)]
    )
    assert len(race.reports()) == 2
    race.clear()
    concurrently(child, parent)
    assert len(race.reports()) == 1  # clear() also forgets which pairs were reported


def test_strip_path_prefix() -> None:
    old = race.options().strip_path_prefix
    race.configure(strip_path_prefix=os.path.dirname(HERE) + os.sep)
    try:
        d = race.watch({}, name="m")
        concurrently(lambda: d.get("k"), lambda: d.__setitem__("k", 1))
        text = str(race.reports()[0])
        assert f"  {os.path.basename(HERE)}:" in text and HERE not in text
    finally:
        race.configure(strip_path_prefix=old)


def test_history_eviction_prints_failed_to_restore() -> None:
    old = race.options().history_size
    race.configure(history_size=0)  # 32768 events per thread (threads created from now)
    try:
        d = race.watch({}, name="m")
        n = 32768 + 10

        def child() -> None:
            d["victim"] = 1
            for i in range(n):  # each a slow path on a new key: one history event each
                d.get(i)

        concurrently(child, lambda: d.get("victim"))
        (r,) = [r for r in race.reports() if r.key == "victim"]
        assert not r.previous.stack_restored and r.previous.stack == ()
        text = str(r)
        prev = text.split("Previous write", 1)[1]
        assert prev.split("\n")[1] == "  [failed to restore the stack]"
        assert r.current.stack_restored
    finally:
        race.configure(history_size=old)


def test_thread_ids_are_never_reused() -> None:
    ids = set()
    for _ in range(3):
        d = race.watch({}, name="m")
        concurrently(lambda d=d: d.get("k"), lambda d=d: d.__setitem__("k", 1))
        ids.add(race.reports()[-1].previous.thread_id)
        race.clear()
    assert len(ids) == 3


def test_report_printed_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    d = race.watch({}, name="printed")
    concurrently(lambda: d.get("k"), lambda: d.__setitem__("k", 1))
    err = capsys.readouterr().err
    assert "WARNING: DATA RACE" in err and "map 'printed'" in err
    assert err == str(race.reports()[0])


def test_runtime_history_ring_recall() -> None:
    st = _runtime.ThreadState(10**6, "x", {10**6: 1}, None)
    events = [st.record(((test_runtime_history_ring_recall.__code__, i),)) for i in range(3)]
    assert st.recall(events[0]) is not None and st.recall(events[2]) is not None
    assert st.recall(-1) is None and st.recall(99) is None
