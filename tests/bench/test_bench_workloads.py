"""The workload definitions: key offsets, setup states, op-mix proportions, Zipf skew, and
each workload's own checks passing on a correct map. No timing is asserted."""

from __future__ import annotations

import copy
import itertools
import random
from collections import Counter
from typing import Any

import pytest
from support.bench import RecordingMap

import safemap
from safemap.bench.atomicity import BATCH, atomicity_workloads
from safemap.bench.bustle import MIXES, BustleWorkload
from safemap.bench.catalog import all_workloads, select_workloads
from safemap.bench.contention import CacheAside, IterateWhileWriting, SnapshotPerRequest
from safemap.bench.contention import Counter as CounterWorkload
from safemap.bench.gosync import GO_WORKLOADS
from safemap.bench.keys import SCHEDULE_LENGTH, ZipfSampler, draw_indices, shuffled_slots
from safemap.bench.mixes import MixSpec, custom_workload, xsync_workloads
from safemap.bench.peers import LockedDict
from safemap.bench.runner import KEY_STRIDE, MAX_BATCH, plan, run_cell
from safemap.bench.workload import Run, ThreadState, contents

GO_NAMES = [
    "LoadMostlyHits",
    "LoadMostlyMisses",
    "LoadOrStoreBalanced",
    "LoadOrStoreUnique",
    "LoadOrStoreCollision",
    "LoadAndDeleteBalanced",
    "LoadAndDeleteUnique",
    "LoadAndDeleteCollision",
    "Range",
    "AdversarialAlloc",
    "AdversarialDelete",
    "DeleteCollision",
    "SwapCollision",
    "SwapMostlyHits",
    "SwapMostlyMisses",
    "CompareAndSwapCollision",
    "CompareAndSwapNoExistingKey",
    "CompareAndSwapValueNotEqual",
    "CompareAndSwapMostlyHits",
    "CompareAndSwapMostlyMisses",
    "CompareAndDeleteCollision",
    "CompareAndDeleteMostlyHits",
    "CompareAndDeleteMostlyMisses",
    "Clear",
]


def _go(name: str) -> object:
    return next(w for w in GO_WORKLOADS if w.name == name)


def test_go_set_is_complete_and_in_order() -> None:
    assert [w.name for w in GO_WORKLOADS] == GO_NAMES


def test_per_thread_key_offsets_follow_go_id_times_n() -> None:
    # Go: goroutine id starts its counter at i = id * b.N. With an op budget N per
    # thread, thread t must use exactly the keys t*N .. t*N + N - 1.
    m = RecordingMap()
    n, threads = 200, 3
    outcome = run_cell(_go("LoadOrStoreUnique"), lambda: m, threads, duration=1, ops_per_thread=n)
    assert outcome.anomalies == 0 and outcome.verdict.problems == []
    by_thread: dict[str, set[int]] = {}
    for thread, op, key in m.calls:
        assert op == "load_or_store"
        by_thread.setdefault(thread, set()).add(key)
    assert sorted(map(min, by_thread.values())) == [0, n, 2 * n]
    assert all(keys == set(range(min(keys), min(keys) + n)) for keys in by_thread.values())


def test_duration_bounded_offsets_are_disjoint_and_staggered() -> None:
    m = RecordingMap()
    run_cell(_go("LoadOrStoreUnique"), lambda: m, 2, duration=0.01)
    first: dict[str, int] = {}  # thread name -> its least key
    for name, _, k in m.calls:
        first[name] = min(k, first.get(name, k))
    firsts = sorted(first.values())
    assert firsts == [0, KEY_STRIDE]
    assert KEY_STRIDE % 1024 != 0  # threads start at different i % 1024, as with Go's b.N


@pytest.mark.parametrize("cap", [None, 4, 10, BATCH])
def test_batches_grow_up_to_the_workloads_max_batch(cap: int | None) -> None:
    workload = copy.copy(_go("LoadMostlyHits"))
    workload.max_batch = cap
    sizes: list[int] = []
    build = workload.worker

    def worker(m: Any, state: ThreadState, threads: int) -> Run:
        run = build(m, state, threads)

        def counted(first: int, count: int) -> None:
            sizes.append(count)
            run(first, count)

        return counted

    workload.worker = worker
    run_cell(workload, safemap.LockedMap, 1, duration=60, ops_per_thread=200_000)
    most = MAX_BATCH if cap is None else cap
    assert sizes[0] == 1
    # Each batch doubles the one before (up to the cap), or repeats it when that one took
    # over BATCH_SECONDS; the last is what the budget left.
    for before, after in itertools.pairwise(sizes[:-1]):
        assert after in (before, min(2 * before, most)), sizes
    # Reached: a batch of a few hundred calls takes well under 2 ms, however busy the
    # machine, save for the few that a preemption slows.
    assert max(sizes) == most


def test_atomicity_checks_run_short_batches() -> None:
    assert {w.max_batch for w in atomicity_workloads()} == {BATCH}
    assert all(
        w.max_batch is None for w in all_workloads(capacity=64) if w.info.family != "atomicity"
    )


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("LoadMostlyHits", {i: i for i in range(1023)}),
        ("LoadMostlyMisses", {0: 0}),
        ("LoadOrStoreBalanced", {i: i for i in range(128)}),
        ("LoadOrStoreUnique", {}),
        ("Range", {i: i for i in range(1024)}),
        ("CompareAndSwapValueNotEqual", {0: 0}),
        ("SwapMostlyHits", {i: i for i in range(1023)}),
        ("Clear", {}),
    ],
)
def test_go_setup_states(name: str, state: dict[int, int]) -> None:
    m = LockedDict()
    _go(name).setup(m, threads=2)
    assert contents(m) == state


def test_go_prime_loads_twice_the_hits() -> None:
    m = RecordingMap()
    _go("LoadMostlyHits").setup(m, threads=1)
    ops = Counter(op for _, op, _ in m.calls)
    assert ops == {"load_or_store": 1023, "load": 2 * 1023}
    loads = [k for _, op, k in m.calls if op == "load"]
    assert loads == [i % 1023 for i in range(2046)]


@pytest.mark.parametrize("workload", GO_WORKLOADS, ids=lambda w: w.name)
def test_go_workloads_pass_their_checks_on_a_correct_map(workload: object) -> None:
    outcome = run_cell(workload, safemap.LockedMap, 2, duration=1, ops_per_thread=2100)
    assert outcome.exceptions == 0, outcome.errors
    assert outcome.anomalies == 0
    assert outcome.verdict.lost == 0 and outcome.verdict.problems == []
    assert outcome.ops == 4200


def test_known_final_states_are_declared() -> None:
    unchecked = {w.name for w in GO_WORKLOADS if not w.info.known_state}
    assert unchecked == {"AdversarialDelete", "Clear"}


def _proportions(ops: list[str]) -> dict[str, float]:
    return {op: n / len(ops) for op, n in Counter(ops).items()}


@pytest.mark.parametrize("read_pct", [100, 99, 90, 75])
@pytest.mark.parametrize("dist", ["uniform", "zipf"])
def test_xsync_op_mix_proportions(read_pct: int, dist: str) -> None:
    w = next(w for w in xsync_workloads() if w.name == f"xsync-{read_pct}%reads-{dist}")
    ops, idx = w.schedule(0)
    assert len(ops) == len(idx) == SCHEDULE_LENGTH
    share = _proportions(ops)
    write = (100 - read_pct) / 200
    # 16,384 draws: the binomial standard deviation is below 0.004 for every share here.
    assert share.get("load", 0) == pytest.approx(read_pct / 100, abs=0.015)
    assert share.get("store", 0) == pytest.approx(write, abs=0.015)
    assert share.get("delete", 0) == pytest.approx(write, abs=0.015)
    assert all(0 <= i < 1000 for i in idx)


def test_xsync_keys_and_prefill() -> None:
    w = xsync_workloads()[0]
    m = LockedDict()
    w.setup(m, 1)
    state = contents(m)
    assert len(state) == 1000
    assert state["what_a_looooooooooooooooooooooong_key_prefix_7"] == 7


def test_threads_get_different_schedules() -> None:
    w = xsync_workloads()[2]
    assert w.schedule(0) != w.schedule(1)
    assert w.schedule(0) == w.schedule(0)  # drawn once, the same for every implementation


def test_custom_mix_has_exact_proportions_in_every_100_operations() -> None:
    spec = MixSpec({"load": 70, "store": 20, "delete": 7, "swap": 3}, keys=50)
    ops, idx = custom_workload(spec).schedule(1)
    for start in range(0, 1000, 37):
        assert Counter(ops[start : start + 100]) == {
            "load": 70,
            "store": 20,
            "delete": 7,
            "swap": 3,
        }
    assert all(0 <= i < 50 for i in idx)


def test_shuffled_slots_rejects_a_bad_mix() -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        shuffled_slots({"load": 50}, random.Random(0))


def test_zipf_skew() -> None:
    z = ZipfSampler(1000)
    probs = [z.probability(k) for k in range(1000)]
    assert sum(probs) == pytest.approx(1.0)
    assert all(a > b for a, b in itertools.pairwise(probs))
    draws = draw_indices(1000, 50_000, "zipf", random.Random(1))
    freq = Counter(draws)
    assert freq[0] / len(draws) == pytest.approx(probs[0], rel=0.1)
    top_tenth = sum(n for k, n in freq.items() if k < 100) / len(draws)
    assert top_tenth > 0.6  # a few keys take most accesses
    uniform = Counter(draw_indices(1000, 50_000, "uniform", random.Random(1)))
    assert sum(n for k, n in uniform.items() if k < 100) / 50_000 == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("name", list(MIXES))
def test_bustle_keys_and_schedule(name: str) -> None:
    w = BustleWorkload(name, 4096)
    for threads in (1, 2, 3):
        n = w.keys_per_thread(threads)
        assert n & (n - 1) == 0  # a power of two (the LCG needs it)
        assert n * threads >= w.prefill + (w.capacity // 100 + 1) * w.mix["insert"]
        keys = w.thread_keys(threads)
        assert [len(k) for k in keys] == [n] * threads
        assert len({k for ks in keys for k in ks}) == n * threads  # disjoint per thread
        assert w.ops_per_thread(threads) == 4096 // threads
    assert Counter(shuffled_slots(w.mix, random.Random(0))) == {
        op: pct for op, pct in w.mix.items() if pct
    }


def test_bustle_lcg_visits_every_slot() -> None:
    n = BustleWorkload("ReadHeavy", 4096).keys_per_thread(2)
    a, c = n // 2 + 1, n // 4 - 1
    seen, x = set(), 0
    for _ in range(n):
        seen.add(x)
        x = (a * x + c) & (n - 1)
    assert len(seen) == n


@pytest.mark.parametrize("name", list(MIXES))
@pytest.mark.parametrize("threads", [1, 2])
def test_bustle_final_state_verified_on_a_correct_map(name: str, threads: int) -> None:
    w = BustleWorkload(name, 2048)
    outcome = run_cell(w, safemap.LockedMap, threads, duration=1)
    assert outcome.ops == 2048 // threads * threads
    assert outcome.anomalies == 0
    assert outcome.verdict.known_state and outcome.verdict.problems == []


def test_bustle_prefill() -> None:
    w = BustleWorkload("ReadHeavy", 2048)
    m = LockedDict()
    w.setup(m, 2)
    assert len(m) == 2048 * 3 // 4
    assert set(contents(m)) == {k for ks in w.thread_keys(2) for k in ks[: 2048 * 3 // 8]}


def test_counter_and_iteration_on_a_correct_map() -> None:
    for w in (CounterWorkload(), IterateWhileWriting(200), SnapshotPerRequest(200)):
        outcome = run_cell(w, safemap.RWLockMap, 2, duration=1, ops_per_thread=517)
        assert outcome.exceptions == 0 and outcome.anomalies == 0
        assert outcome.verdict.known_state and outcome.verdict.problems == [], w.name


@pytest.mark.parametrize("map_type", [safemap.ConcurrentMap, safemap.Cache, safemap.LockedMap])
def test_cache_aside_on_correct_maps(map_type: Any) -> None:
    outcome = run_cell(CacheAside(300), map_type, 2, duration=1, ops_per_thread=3000)
    assert outcome.exceptions == 0 and outcome.anomalies == 0
    assert outcome.verdict.known_state and outcome.verdict.problems == []


def test_cache_aside_catches_a_map_that_returns_another_value() -> None:
    class Stale(safemap.LockedMap):  # type: ignore[type-arg,misc]
        def setdefault(self, key: Any, value: Any = None, /) -> Any:
            return super().setdefault(key, value + 1 if key % 7 == 0 else value)

    outcome = run_cell(CacheAside(300), Stale, 2, duration=1, ops_per_thread=3000)
    assert outcome.anomalies > 0
    assert outcome.verdict.lost > 0 and outcome.verdict.problems


def test_snapshot_per_request_on_persistent_map_and_a_torn_snapshot() -> None:
    w = SnapshotPerRequest(100)
    outcome = run_cell(w, safemap.PersistentMap, 2, duration=1, ops_per_thread=400)
    assert outcome.exceptions == 0 and outcome.anomalies == 0
    assert outcome.verdict.known_state and outcome.verdict.problems == []

    class Torn(safemap.LockedMap):  # type: ignore[type-arg,misc]
        def snapshot(self) -> dict[object, object]:  # misses a key: not one instant
            snap = dict(super().snapshot())
            snap.pop(0, None)
            return snap

    outcome = run_cell(w, Torn, 1, duration=1, ops_per_thread=64)
    assert outcome.anomalies > 0


def test_counter_final_value_is_the_increment_count() -> None:
    m = safemap.LockedMap()
    run_cell(CounterWorkload(), lambda: m, 3, duration=1, ops_per_thread=400)
    assert m["hits"] == 1200


def test_catalog_selection() -> None:
    workloads = all_workloads(capacity=1024)
    assert len(workloads) == 24 + 8 + 3 + 4 + 7
    assert len({w.name for w in workloads}) == len(workloads)
    picked = select_workloads(workloads, ["loadorstore*", "xsync", "Counter"])
    assert [w.name for w in picked] == [
        "LoadOrStoreBalanced",
        "LoadOrStoreUnique",
        "LoadOrStoreCollision",
        *(w.name for w in workloads if w.info.family == "xsync"),
        "Counter",
        "LoadOrStoreRace",  # the atomicity checks come last
    ]
    with pytest.raises(ValueError, match="no workload matches"):
        select_workloads(workloads, ["nope"])


def test_plan_interleaves_and_rotates_implementations() -> None:
    from safemap.bench.registry import discover

    impls = discover()[0][:3]
    cells = plan(GO_WORKLOADS[:2], impls, [1, 2], rounds=2)
    assert len(cells) == 2 * 2 * 2 * 3
    groups = [cells[i : i + 3] for i in range(0, len(cells), 3)]
    assert all({c.impl.name for c in g} == {i.name for i in impls} for g in groups)
    assert len({g[0].impl.name for g in groups}) == 3  # who goes first rotates
