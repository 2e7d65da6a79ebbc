"""conc-map-bench's mixes (xacrimon/conc-map-bench, on the bustle harness, after
libcuckoo's "universal benchmark"), scaled down for Python.

Definition (conc-map-bench's), with the initial capacity scaled from
``2**25`` to ``capacity`` (:data:`QUICK_CAPACITY` / :data:`THOROUGH_CAPACITY`), all
ratios kept:

- ``total_ops = capacity`` split evenly across the threads (op-count bounded);
- prefill ``75%`` of capacity (ReadHeavy, Exchange) or ``0%`` (RapidGrow), each thread
  inserting the first ``prefill / threads`` of its own keys;
- per thread, ``n = next_pow2(ceil((max(capacity, ceil(ops / 100) * insert%) + prefill) /
  threads))`` random 64-bit keys, disjoint between threads;
- the mix (read/insert/remove/update %) in a 100-slot array shuffled once per thread and
  replayed cyclically;
- counters ``insert_seq = prefill per thread``, ``erase_seq = 0``, ``find_seq = 0``.
  Read: ``load(keys[find_seq])`` must hit iff ``erase_seq <= find_seq < insert_seq``, then
  ``find_seq = (a * find_seq + c) & (n - 1)`` with ``a = n / 2 + 1``, ``c = n / 4 - 1``.
  Insert: ``swap(keys[insert_seq], 0)`` (insert returning the previous value) must find
  no previous value; ``insert_seq += 1``. Remove: if the thread's slice is empty,
  ``load_and_delete(keys[find_seq])`` must miss (advance the LCG); else
  ``load_and_delete(keys[erase_seq])`` must hit, ``erase_seq += 1``. Update:
  ``compute_if_present(keys[find_seq], +1)`` must succeed iff the key is live; advance the
  LCG.

Each thread's live keys are exactly ``keys[erase_seq:insert_seq]``, so the final state is
known and verified.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from .keys import next_pow2, shuffled_slots
from .protocol import ABSENT, BenchMap, direct
from .results import WorkloadInfo
from .workload import Run, ThreadState, Verdict, Workload, compare_keys

__all__ = ["MIXES", "QUICK_CAPACITY", "THOROUGH_CAPACITY", "BustleWorkload", "bustle_workloads"]

QUICK_CAPACITY = 1 << 13
THOROUGH_CAPACITY = 1 << 16

MIXES: dict[str, tuple[Mapping[str, int], float]] = {
    # name: ({op: percent}, prefill fraction)
    "ReadHeavy": ({"read": 98, "insert": 1, "remove": 1, "update": 0}, 0.75),
    "Exchange": ({"read": 10, "insert": 40, "remove": 40, "update": 10}, 0.75),
    "RapidGrow": ({"read": 5, "insert": 80, "remove": 5, "update": 10}, 0.0),
}

_OPS = {"read": 0, "insert": 1, "remove": 2, "update": 3}


def _increment(_key: Any, value: Any) -> Any:
    return value + 1


class BustleWorkload(Workload):
    """One conc-map-bench mix at a given (scaled) capacity."""

    def __init__(self, name: str, capacity: int) -> None:
        mix, prefill_fraction = MIXES[name]
        self.mix = mix
        self.capacity = capacity
        self.prefill = int(capacity * prefill_fraction)
        self._keys: dict[int, list[list[int]]] = {}
        self.info = WorkloadInfo(
            name=name,
            family="conc-map-bench",
            anchor=f"xacrimon/conc-map-bench (bustle), capacity 2^25 scaled to "
            f"2^{capacity.bit_length() - 1}, same ratios",
            description=f"read/insert/remove/update {mix['read']}/{mix['insert']}/"
            f"{mix['remove']}/{mix['update']}%, prefill {prefill_fraction:.0%}, "
            f"{capacity:,} operations in all, per-thread disjoint random 64-bit keys",
            profile={
                "ReadHeavy": "reads dominate and keys are disjoint per thread",
                "Exchange": "inserts and removes dominate, keys disjoint per thread",
                "RapidGrow": "inserts dominate and the map keeps growing",
            }[name],
            ops=("load", "swap", "load_and_delete", "compute_if_present"),
            known_state=True,
            bounded="ops",
        )

    def ops_per_thread(self, threads: int) -> int:
        return self.capacity // threads

    def keys_per_thread(self, threads: int) -> int:
        """``n``: a power of two, at least the thread's prefill plus its inserts."""
        max_insert_ops = math.ceil(self.capacity / 100) * self.mix["insert"]
        return next_pow2(math.ceil((max(self.capacity, max_insert_ops) + self.prefill) / threads))

    def thread_keys(self, threads: int) -> list[list[int]]:
        """Each thread's random keys, disjoint between threads (drawn once per count)."""
        if threads not in self._keys:
            rng = random.Random(0xB057 + threads)
            n = self.keys_per_thread(threads)
            seen: set[int] = set()
            out = []
            for _ in range(threads):
                keys: list[int] = []
                while len(keys) < n:
                    k = rng.getrandbits(64)
                    if k not in seen:
                        seen.add(k)
                        keys.append(k)
                out.append(keys)
            self._keys[threads] = out
        return self._keys[threads]

    def setup(self, m: BenchMap, threads: int) -> None:
        per_thread = self.prefill // threads
        for keys in self.thread_keys(threads):
            for k in keys[:per_thread]:
                m.store(k, 0)

    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        keys = self.thread_keys(threads)[state.tid]
        n = len(keys)
        a, c, mask = n // 2 + 1, n // 4 - 1, n - 1
        slots = [_OPS[op] for op in shuffled_slots(self.mix, random.Random(state.tid))]
        get, pop = (d := direct(m)).get, d.pop
        swap, update = m.swap, m.compute_if_present
        state.data.update(insert_seq=self.prefill // threads, erase_seq=0, find_seq=0, slot=0)

        def run(first: int, count: int) -> None:
            d = state.data
            ins, era, find, slot = d["insert_seq"], d["erase_seq"], d["find_seq"], d["slot"]
            bad = 0
            for _ in range(count):
                op = slots[slot]
                slot = slot + 1 if slot < 99 else 0
                if op == 0:  # read
                    if (get(keys[find], ABSENT) is not ABSENT) != (era <= find < ins):
                        bad += 1
                    find = (a * find + c) & mask
                elif op == 1:  # insert
                    if swap(keys[ins], 0)[1]:
                        bad += 1
                    ins += 1
                elif op == 2:  # remove
                    if era == ins:
                        if pop(keys[find], ABSENT) is not ABSENT:
                            bad += 1
                        find = (a * find + c) & mask
                    else:
                        if pop(keys[era], ABSENT) is ABSENT:
                            bad += 1
                        era += 1
                else:  # update
                    live = era <= find < ins
                    if (update(keys[find], _increment) is not None) != live:
                        bad += 1
                    find = (a * find + c) & mask
            d.update(insert_seq=ins, erase_seq=era, find_seq=find, slot=slot)
            state.anomalies += bad

        return run

    def expected_keys(self, states: Sequence[ThreadState], threads: int) -> set[int]:
        """The keys live at the end: each thread's ``keys[erase_seq:insert_seq]``."""
        live: set[int] = set()
        for st, keys in zip(states, self.thread_keys(threads), strict=True):
            live.update(keys[st.data["erase_seq"] : st.data["insert_seq"]])
        return live

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        # Values count successful updates; the key set is what the definition determines.
        return compare_keys(m, self.expected_keys(states, threads))


def bustle_workloads(capacity: int) -> list[BustleWorkload]:
    """ReadHeavy, Exchange and RapidGrow at ``capacity``."""
    return [BustleWorkload(name, capacity) for name in MIXES]
