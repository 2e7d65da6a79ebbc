"""Atomicity checks: one workload per compound operation, built so that an implementation
that composes the operation from several calls (check-then-act) fails, run after run.

The other workloads measure realistic patterns, and most of them cannot tell an atomic
compound operation from a composed one: their keys are disjoint per thread, or a lost
race leaves the same final state. Each workload here makes every thread call the
operation on **one hot key**, so any two calls can overlap, and defines an invariant that
holds exactly when each call took effect at one instant:

- **LoadOrStoreRace**: every thread calls ``load_or_store(k, tid)`` for the first key
  ``k`` not yet known to be stored (a counter the cell's threads share, advanced by the
  call that stored), so all threads race to insert each key: every key must be inserted
  by exactly one call (the calls that stored are those that got their own ``tid`` back).
  A composed ``load_or_store`` lets two threads see the key absent and both store.
- **LoadAndDeleteRace**: key holds a ticket ``n``; ``v, ok = load_and_delete(k)``; the call
  that got it stores ``n + 1``. The final ticket must equal the number of successful
  ``load_and_delete`` calls: two calls that both "remove" ticket ``n`` lose one.
- **SwapRace**: ``prev, ok = swap(k, i)`` with unique tokens: every token stored must come
  back exactly once as some call's ``prev``, except the one the key holds at the end.
- **CompareAndSwapRace**: ``v = load(k)``; ``compare_and_swap(k, v, v + 1)``: the final
  value must equal the number of successful swaps (a counter made of CAS).
- **CompareAndDeleteRace**: ``v = load(k)``; if ``compare_and_delete(k, v)``: store
  ``v + 1``: the final value must equal the number of successful deletes.
- **ComputeIfPresentRace**: ``compute_if_present(k, v + 1)`` on a present key: the final
  value must equal the number of calls.
- **MergeRace**: ``merge(k, 1, operator.add)``: the final value must equal the number of
  calls.

A cell with several threads goes on past its duration until every thread has seen the
others make progress during :data:`OVERLAPS` of its batches (of at most :data:`BATCH`
operations), and on a GIL build the runner lowers the interpreter's switch interval to
:data:`SWITCH_INTERVAL` for these cells (``Workload.switch_interval``), so that threads
are switched inside a composed operation thousands of times per cell; on a free-threaded
build the threads run in parallel. A cell whose threads did not reach :data:`OVERLAPS`
within :data:`OVERTIME` is not conclusive (``CellOutcome.conclusive``): it passing is no
evidence of atomicity.
"""

from __future__ import annotations

import operator
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

from .protocol import ABSENT, BenchMap, direct
from .results import WorkloadInfo
from .workload import (
    Run,
    ThreadState,
    Verdict,
    Workload,
    compare_keys,
    compare_state,
    contents,
)

__all__ = ["BATCH", "OVERLAPS", "OVERTIME", "SWITCH_INTERVAL", "Race", "atomicity_workloads"]

OVERLAPS = 32
"""Batches during which, for every thread, another thread made progress (ran in
parallel, or was switched in): an atomicity cell goes on past its duration until each
thread has had this many, so that composed operations get interleaved however busy the
machine is."""
# Why 32: on a saturated machine an overlap is about one thread switch, and a switch
# lands inside the narrowest check-then-act window (compare_and_delete's) about one time
# in six. With 16, a cell of a composed compare_and_delete passed about once in 150-450
# cells on a 2-core machine under load; 32 squares that chance, for about twice the
# overtime (~0.4 -> ~0.8 s a cell there, ~40 -> ~80 ms on a quiet machine, with the
# runner's batches; see BATCH).

BATCH = 16
"""The most operations an atomicity cell's thread runs between two looks at the others'
progress (``Workload.max_batch``)."""
# Why small: an overlap is a batch during which another thread made progress, however
# many switches it held, and OVERLAPS is set for the worst case of one switch each (a
# saturated machine). With the runner's batches (up to 1,024 operations or 2 ms) an
# overlap cost ~2 ms on a quiet machine, where it held far more switches than that: a
# cell took ~80 ms, and the 231 cells of `safemap bench --quick` were two thirds of its
# time. With 16 operations a cell takes ~10 ms there, and still has at least OVERLAPS
# switches.

OVERTIME = 2.0
"""The longest an atomicity cell goes on past its duration waiting for :data:`OVERLAPS`."""

SWITCH_INTERVAL = 1e-6
"""The switch interval (s) of atomicity cells on a GIL build: a thread switch at nearly
every point the interpreter can switch."""

KEY = 0  # the hot key

Body = Callable[[BenchMap, ThreadState, list[int]], Run]
"""A thread's loop, given the map, the thread's state and a one-slot list shared by the
cell's threads."""
Check = Callable[[BenchMap, Sequence[ThreadState]], Verdict]


class Race(Workload):
    """Every thread calls one compound operation on one hot key; the verdict checks the
    invariant that holds only if each call was atomic."""

    switch_interval = SWITCH_INTERVAL
    overtime = OVERTIME
    max_batch = BATCH
    min_threads = 2  # one thread cannot race: its cells would only cost time

    def __init__(
        self,
        name: str,
        *,
        description: str,
        ops: Sequence[str],
        initial: dict[Any, Any],
        body: Body,
        check: Check,
    ) -> None:
        self.info = WorkloadInfo(
            name=name,
            family="atomicity",
            anchor="safemap's atomicity check: every thread on one hot key, an invariant "
            "that a composed (check-then-act) operation breaks",
            description=description,
            profile="every thread calls one compound operation on one hot key",
            ops=tuple(ops),
            known_state=True,
            bounded="duration",
        )
        self._initial = initial
        self._body = body
        self._check = check
        self._progress: list[int] = []
        self._shared: list[int] = []

    def setup(self, m: BenchMap, threads: int) -> None:
        self._progress = [0] * threads  # operations done, per thread (this cell's)
        self._shared = [0]
        for k, v in self._initial.items():
            m.store(k, v)

    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        run = self._body(m, state, self._shared)
        progress, tid = self._progress, state.tid
        state.data["overlaps"] = 0
        seen = 0  # the other threads' progress when this thread last looked

        def counted(first: int, count: int) -> None:
            nonlocal seen
            run(first, count)
            progress[tid] += count  # only this thread writes its slot
            others = sum(progress) - progress[tid]
            if others != seen:  # another thread ran during this batch
                seen = others
                state.data["overlaps"] += 1

        return counted

    def more(self, states: Sequence[ThreadState]) -> bool:
        # One thread cannot overlap with anyone: waiting for it would only cost overtime.
        return len(states) > 1 and not self.conclusive(states)

    def conclusive(self, states: Sequence[ThreadState]) -> bool:
        """Whether every thread reached :data:`OVERLAPS` (never with a single thread).

        A cell that ran out of :data:`OVERTIME` first (threads starved of CPU by a busy
        machine) gave a composed operation little chance to be interleaved: its pass
        says nothing about the map's atomicity.
        """
        return len(states) > 1 and min(st.data["overlaps"] for st in states) >= OVERLAPS

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        return self._check(m, states)


def _final_count(what: str, count: Callable[[Sequence[ThreadState]], int]) -> Check:
    """The check of a counter built from the operation: the key must hold ``count``."""

    def check(m: BenchMap, states: Sequence[ThreadState]) -> Verdict:
        expected = count(states)
        verdict = compare_state(m, {KEY: expected})
        if verdict.problems:
            value, found = m.load(KEY)
            holds = value if found else "nothing"
            verdict.problems = [f"the key holds {holds} after {expected} {what}"]
            lost = abs(expected - value) if found and isinstance(value, int) else expected
            verdict.lost = max(lost, 1)
        return verdict

    return check


def _wins(states: Sequence[ThreadState]) -> int:
    return sum(st.data.get("wins", 0) for st in states)


def _calls(states: Sequence[ThreadState]) -> int:
    return sum(st.ops for st in states)


# ------------------------------------------------------------- load_or_store


def _load_or_store_body(m: BenchMap, st: ThreadState, shared: list[int]) -> Run:
    setdefault = direct(m).setdefault
    st.data["stored"] = 0
    mine = st.tid  # the value this thread inserts: the call stored iff it gets it back

    def run(first: int, count: int) -> None:
        stored = 0
        for _ in range(count):
            k = shared[0]  # the first key not known to be stored: every thread races for it
            if setdefault(k, mine) == mine:
                stored += 1
                shared[0] = k + 1
        st.data["stored"] += stored

    return run


def _load_or_store_check(m: BenchMap, states: Sequence[ThreadState]) -> Verdict:
    present = contents(m)
    keys = max(present, default=-1) + 1
    # Distinct non-negative int keys below ``keys``, as many as ``keys``: exactly 0..keys-1.
    if len(present) == keys and all(type(k) is int and k >= 0 for k in present):
        verdict = Verdict(known_state=True)
    else:
        verdict = compare_keys(m, set(range(keys)))
    stored = sum(st.data["stored"] for st in states)
    if stored != keys:  # each key is inserted by exactly one call
        verdict.lost += abs(stored - keys)
        verdict.problems.append(
            f"{stored} load_or_store calls stored one of {keys} keys: "
            f"{stored - keys} inserts were lost (overwritten)"
        )
    return verdict


# ----------------------------------------------------------- load_and_delete


def _load_and_delete_body(m: BenchMap, st: ThreadState, shared: list[int]) -> Run:
    pop, t = (d := direct(m)).pop, d.target
    st.data["wins"] = 0

    def run(first: int, count: int) -> None:
        wins = 0
        for _ in range(count):
            v = pop(KEY, ABSENT)
            if v is not ABSENT:  # this call holds ticket v; nobody else can until v + 1
                wins += 1
                t[KEY] = v + 1
        st.data["wins"] += wins

    return run


# ---------------------------------------------------------------------- swap


def _swap_body(m: BenchMap, st: ThreadState, shared: list[int]) -> Run:
    swap = m.swap
    previous: list[Any] = []
    st.data["previous"] = previous
    append = previous.append

    def run(first: int, count: int) -> None:
        bad = 0
        for i in range(first, first + count):
            v, ok = swap(KEY, i)
            if not ok:  # the key is never absent
                bad += 1
            append(v)
        st.anomalies += bad

    return run


def _swap_check(m: BenchMap, states: Sequence[ThreadState]) -> Verdict:
    # Every token (the initial -1, then each operation's number, all distinct) must come
    # back exactly once: returned by a later swap, or left in the map at the end.
    stored = [-1, *chain.from_iterable(st.executed() for st in states)]
    returned = list(chain.from_iterable(st.data["previous"] for st in states))
    value, found = m.load(KEY)
    if found:
        returned.append(value)
    distinct = set(stored)
    if len(distinct) == len(stored) == len(returned) and set(returned) == distinct:
        return Verdict(known_state=True)  # same length, same distinct elements: a permutation
    surplus, missing = Tally(returned), Tally(stored)
    twice = sum((surplus - missing).values())  # returned more often than stored
    lost = sum((missing - surplus).values())  # stored, then never seen again
    return Verdict(
        known_state=True,
        lost=lost,
        problems=[f"{lost} swapped-in values were lost, {twice} were returned twice"],
    )


# ---------------------------------------------------------- compare_and_swap


def _cas_body(m: BenchMap, st: ThreadState, shared: list[int]) -> Run:
    get, cas = direct(m).get, m.compare_and_swap
    st.data["wins"] = 0

    def run(first: int, count: int) -> None:
        wins = 0
        for _ in range(count):
            v = get(KEY, 0)
            if cas(KEY, v, v + 1):
                wins += 1
        st.data["wins"] += wins

    return run


# -------------------------------------------------------- compare_and_delete


def _cad_body(m: BenchMap, st: ThreadState, shared: list[int]) -> Run:
    get, t, cad = (d := direct(m)).get, d.target, m.compare_and_delete
    st.data["wins"] = 0

    def run(first: int, count: int) -> None:
        wins = 0
        for _ in range(count):
            v = get(KEY, ABSENT)
            if v is not ABSENT and cad(KEY, v):  # this call removed ticket v: it alone
                wins += 1  # stores v + 1
                t[KEY] = v + 1
        st.data["wins"] += wins

    return run


# -------------------------------------------------- compute_if_present, merge


def _increment(_key: Any, value: Any) -> Any:
    return value + 1


def _compute_if_present_body(m: BenchMap, st: ThreadState, shared: list[int]) -> Run:
    cip = m.compute_if_present

    def run(first: int, count: int) -> None:
        bad = 0
        for _ in range(count):
            if cip(KEY, _increment) is None:  # the key is never absent
                bad += 1
        st.anomalies += bad

    return run


def _merge_body(m: BenchMap, st: ThreadState, shared: list[int]) -> Run:
    merge, add = m.merge, operator.add

    def run(first: int, count: int) -> None:
        for _ in range(count):
            merge(KEY, 1, add)

    return run


def atomicity_workloads() -> list[Workload]:
    """One atomicity check per compound operation the other workloads measure."""
    return [
        Race(
            "LoadOrStoreRace",
            description="no setup; op: k = the first key not yet stored (shared by the "
            "threads); LoadOrStore(k, tid); each key is stored by exactly one call",
            ops=("load_or_store",),
            initial={},
            body=_load_or_store_body,
            check=_load_or_store_check,
        ),
        Race(
            "LoadAndDeleteRace",
            description="k -> 0; op: if LoadAndDelete(k) loaded n: Store(k, n + 1); "
            "final: k -> the number of successful LoadAndDelete calls",
            ops=("load_and_delete", "store"),
            initial={KEY: 0},
            body=_load_and_delete_body,
            check=_final_count("successful load_and_delete calls", _wins),
        ),
        Race(
            "SwapRace",
            description="k -> -1; op i: Swap(k, i) must load; every value stored is "
            "returned exactly once, except the final one",
            ops=("swap",),
            initial={KEY: -1},
            body=_swap_body,
            check=_swap_check,
        ),
        Race(
            "CompareAndSwapRace",
            description="k -> 0; op: v = Load(k); CompareAndSwap(k, v, v + 1); final: k -> "
            "the number of successful swaps",
            ops=("load", "compare_and_swap"),
            initial={KEY: 0},
            body=_cas_body,
            check=_final_count("successful compare_and_swap calls", _wins),
        ),
        Race(
            "CompareAndDeleteRace",
            description="k -> 0; op: v = Load(k); if CompareAndDelete(k, v): Store(k, v + 1); "
            "final: k -> the number of successful deletes",
            ops=("load", "compare_and_delete", "store"),
            initial={KEY: 0},
            body=_cad_body,
            check=_final_count("successful compare_and_delete calls", _wins),
        ),
        Race(
            "ComputeIfPresentRace",
            description="k -> 0; op: ComputeIfPresent(k, v + 1); final: k -> the number of calls",
            ops=("compute_if_present",),
            initial={KEY: 0},
            body=_compute_if_present_body,
            check=_final_count("compute_if_present increments", _calls),
        ),
        Race(
            "MergeRace",
            description="k -> 0; op: Merge(k, 1, add); final: k -> the number of calls",
            ops=("merge",),
            initial={KEY: 0},
            body=_merge_body,
            check=_final_count("merge increments", _calls),
        ),
    ]
