"""Readers racing writers: every read returns a value that was stored for that key.

Writers replace and delete values while readers read the same keys. Each stored value is a
fresh object that only the map references, so a replaced value is freed at once: a read
that took its reference too late would return freed (or recycled) memory. On free-threaded
CPython 3.14+ SyncMap reads values with no lock (a try-incref re-checked against the entry),
which is what this exercises hardest; it runs on every build and map. Exact invariant:
every value read is a ``Value`` of the key read, with a sequence number that its writer
stored; nothing raises; every thread finishes (join timeouts guard against hangs)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from safemap.native import ConcurrentMap, SyncMap

KEYS = 16
WRITES = 6000  # per writer
READERS = 3
WRITERS = 2
GUARD = 60.0


class Value:
    __slots__ = ("key", "seq")

    def __init__(self, key: int, seq: int) -> None:
        self.key, self.seq = key, seq


def _writer(m: Any, w: int, errors: list[str]) -> None:
    try:
        for i in range(WRITES):
            k = (i * 7 + w) % KEYS
            op = i % 6
            v = Value(k, i * WRITERS + w)
            if op < 3:
                m[k] = v  # in place for a promoted SyncMap key
            elif op == 3:
                m.pop(k, None)
            elif op == 4:
                cur = m.get(k)
                if cur is not None:
                    m.compare_and_swap(k, cur, v)
            else:
                m.swap(k, v)
    except BaseException as exc:
        errors.append(f"writer: {exc!r}")


def _reader(m: Any, done: threading.Event, errors: list[str], reads: list[int]) -> None:
    n = 0
    try:
        while not done.is_set() or n < 2000:
            for k in range(KEYS):
                v = m.get(k)
                if v is not None and (type(v) is not Value or v.key != k):
                    errors.append(f"read {k}: {type(v).__name__}")
                    return
                if v is not None and not (0 <= v.seq < WRITES * WRITERS):
                    errors.append(f"read {k}: seq {v.seq}")
                    return
                n += 1
    except BaseException as exc:
        errors.append(f"reader: {exc!r}")
    reads.append(n)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("T", [ConcurrentMap, SyncMap])
def test_readers_racing_writers_read_only_stored_values(T: type) -> None:
    m = T()
    for k in range(KEYS):
        m[k] = Value(k, 0)
    for _ in range(3):  # SyncMap: promote every key to the read map (in-place writes)
        for k in range(KEYS):
            m.get(k)
    errors: list[str] = []
    reads: list[int] = []
    done = threading.Event()
    readers = [
        threading.Thread(target=_reader, args=(m, done, errors, reads), daemon=True)
        for _ in range(READERS)
    ]
    writers = [
        threading.Thread(target=_writer, args=(m, w, errors), daemon=True) for w in range(WRITERS)
    ]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(GUARD)
    done.set()
    for t in readers:
        t.join(GUARD)
    assert not any(t.is_alive() for t in readers + writers), "hang"
    assert errors == []
    assert len(reads) == READERS and min(reads) >= 2000
    for k in range(KEYS):  # the map is sound afterwards
        v = m.get(k)
        assert v is None or (type(v) is Value and v.key == k)
    assert len(m) == sum(1 for _ in m) == sum(m.get(k) is not None for k in range(KEYS))
