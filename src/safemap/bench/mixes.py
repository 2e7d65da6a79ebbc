"""Random operation mixes: xsync's read/store/delete benchmarks and user-defined mixes.

Both run the same loop over a pre-drawn per-thread schedule (:mod:`.keys`) of
``(operation, key)`` pairs; every key has one canonical value, so every read can be
checked (a hit must return the key's canonical value) and the final map must hold only
canonical entries.

- **xsync** (``puzpuzpuz/xsync`` ``map_test.go``, ``benchmarkMap``): 1,000 string keys
  ``"what_a_looooooooooooooooooooooong_key_prefix_" + str(i)``, the map prefilled with all
  of them ("WarmUp"); per operation ``op = rand() % 1000``, ``i = rand() % 1000`` (or Zipf);
  with ``store = 10 * R`` and ``delete = 10 * R + (1000 - 10 * R) // 2``: ``op >= delete``
  deletes ``k[i]``, ``op >= store`` stores ``(k[i], i)``, else loads ``k[i]``. R is 100, 99,
  90 or 75 (% reads).
- **custom**: percentages per operation (flags or TOML, see :mod:`.config`) laid out in
  conc-map-bench's shuffled 100-slot array, replayed cyclically; keys drawn uniform or
  Zipf over ``keys`` keys; values ``value_size`` bytes (or the key's index when 0).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .keys import SCHEDULE_LENGTH, ZIPF_S, cycle_to, draw_indices, shuffled_slots, string_keys
from .protocol import ABSENT, BenchMap, direct
from .results import WorkloadInfo
from .workload import Run, ThreadState, Verdict, Workload, contents

__all__ = ["MIX_OPERATIONS", "MixSpec", "MixWorkload", "custom_workload", "xsync_workloads"]

Schedule = Callable[[int], tuple[list[str], list[int]]]
"""``schedule(tid)``: a thread's operations and key indices, ``SCHEDULE_LENGTH`` each."""

MIX_OPERATIONS: tuple[str, ...] = (
    "load",
    "store",
    "delete",
    "load_or_store",
    "load_and_delete",
    "swap",
    "compare_and_swap",
    "compare_and_delete",
    "range",
)
"""The operations a mix may contain."""

_CODE = {op: n for n, op in enumerate(MIX_OPERATIONS)}
_READS = frozenset({"load", "range"})


@dataclass(frozen=True)
class MixSpec:
    """A user-defined mix: percentages per operation (summing to 100) and its keys."""

    mix: Mapping[str, int]
    name: str = "Custom"
    keys: int = 1000
    distribution: str = "uniform"
    value_size: int = 0
    threads: tuple[int, ...] = field(default=())
    prefill: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(MIX_OPERATIONS))
        if unknown:
            raise ValueError(
                f"unknown operation(s) in mix: {', '.join(unknown)}; "
                f"use {', '.join(MIX_OPERATIONS)}"
            )
        total = sum(self.mix.values())
        if total != 100 or any(v < 0 for v in self.mix.values()):
            raise ValueError(f"mix percentages must be >= 0 and sum to 100 (they sum to {total})")
        if self.keys < 1:
            raise ValueError("a mix needs at least one key")
        if self.distribution not in ("uniform", "zipf"):
            raise ValueError("distribution must be 'uniform' or 'zipf'")
        if self.value_size < 0:
            raise ValueError("value_size must be >= 0")


def _value(i: int, size: int) -> Any:
    """The canonical value of key index ``i``: ``i``, or ``size`` bytes naming ``i``."""
    if size == 0:
        return i
    tag = b"%d:" % i
    return (tag * (size // len(tag) + 1))[:size]


class MixWorkload(Workload):
    """A random mix over a fixed key set, from a pre-drawn schedule per thread."""

    def __init__(
        self,
        info: WorkloadInfo,
        keys: Sequence[Any],
        values: Sequence[Any],
        schedule: Schedule,
        prefill: bool,
    ) -> None:
        self.info = info
        self._keys = keys
        self._values = values
        self._schedule = schedule
        self._drawn: dict[int, tuple[list[str], list[int]]] = {}
        self._compiled_schedules: dict[int, tuple[list[int], list[Any], list[Any]]] = {}
        self._prefill = prefill

    def setup(self, m: BenchMap, threads: int) -> None:
        if self._prefill:
            store = m.store
            for k, v in zip(self._keys, self._values, strict=True):
                store(k, v)

    def schedule(self, tid: int) -> tuple[list[str], list[int]]:
        """Thread ``tid``'s schedule: ``SCHEDULE_LENGTH`` operations and key indices
        (drawn once, then reused by every implementation and round)."""
        if tid not in self._drawn:
            self._drawn[tid] = self._schedule(tid)
        return self._drawn[tid]

    def _compiled(self, tid: int) -> tuple[list[int], list[Any], list[Any]]:
        """Thread ``tid``'s schedule as operation codes, keys and values (built once)."""
        if tid not in self._compiled_schedules:
            ops, idx = self.schedule(tid)
            self._compiled_schedules[tid] = (
                [_CODE[op] for op in ops],
                [self._keys[i] for i in idx],
                [self._values[i] for i in idx],
            )
        return self._compiled_schedules[tid]

    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        codes, ks, vs = self._compiled(state.tid)
        mask = len(codes) - 1
        d = direct(m)
        get, t, setdefault, pop = d.get, d.target, d.setdefault, d.pop
        swap = m.swap
        cas, cad, rng = m.compare_and_swap, m.compare_and_delete, m.range
        canon = dict(zip(self._keys, self._values, strict=True))

        def check_entry(k: Any, v: Any) -> bool:
            if canon.get(k, canon) != v:
                state.anomalies += 1
            return True

        def run(first: int, count: int) -> None:
            bad = 0
            for j in range(first, first + count):
                s = j & mask
                code = codes[s]
                if code == 0:  # load
                    v = get(ks[s], ABSENT)
                    if v is not ABSENT and v != vs[s]:
                        bad += 1
                elif code == 1:  # store
                    t[ks[s]] = vs[s]
                elif code == 2:  # delete
                    pop(ks[s], None)
                elif code == 3:  # load_or_store
                    if setdefault(ks[s], vs[s]) != vs[s]:
                        bad += 1
                elif code == 4:  # load_and_delete
                    v = pop(ks[s], ABSENT)
                    if v is not ABSENT and v != vs[s]:
                        bad += 1
                elif code == 5:
                    v, ok = swap(ks[s], vs[s])
                    if ok and v != vs[s]:
                        bad += 1
                elif code == 6:
                    cas(ks[s], vs[s], vs[s])
                elif code == 7:
                    cad(ks[s], vs[s])
                else:
                    rng(check_entry)
            state.anomalies += bad

        return run

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        canon = dict(zip(self._keys, self._values, strict=True))
        wrong = [k for k, v in contents(m).items() if k not in canon or canon[k] != v]
        problems = [f"{len(wrong)} entries that no operation stored"] if wrong else []
        return Verdict(known_state=False, problems=problems)


def _xsync_schedule(read_pct: int, distribution: str, seed: int) -> Schedule:
    store_t = 10 * read_pct
    delete_t = store_t + (1000 - store_t) // 2

    def schedule(tid: int) -> tuple[list[str], list[int]]:
        rng = random.Random(seed * 1009 + tid)
        draws = [rng.randrange(1000) for _ in range(SCHEDULE_LENGTH)]
        ops = ["delete" if d >= delete_t else "store" if d >= store_t else "load" for d in draws]
        return ops, draw_indices(1000, SCHEDULE_LENGTH, distribution, rng)

    return schedule


def xsync_workloads(keys: int = 1000) -> list[MixWorkload]:
    """xsync's WarmUp mixes: 100/99/90/75% reads, uniform and Zipf keys."""
    names = string_keys(keys)
    values = list(range(keys))
    out = []
    for dist in ("uniform", "zipf"):
        for read_pct in (100, 99, 90, 75):
            write = (100 - read_pct) / 2
            draw = f"rand() % {keys}" if dist == "uniform" else f"Zipf(s={ZIPF_S}, v=1)"
            info = WorkloadInfo(
                name=f"xsync-{read_pct}%reads-{dist}",
                family="xsync",
                anchor="puzpuzpuz/xsync map_test.go benchmarkMap, WarmUp "
                f"(prefilled; {keys:,} string keys; key index {draw})",
                description=f"{read_pct}% Load, {write:g}% Store(k[i], i), {write:g}% Delete; "
                f"op = rand() % 1000, i = {draw}",
                profile=(
                    f"{'reads only' if read_pct == 100 else f'{read_pct}% reads'} on "
                    f"{keys:,} shared keys" + (", a few of them hot" if dist == "zipf" else "")
                ),
                ops=("load", "store", "delete") if read_pct < 100 else ("load",),
                known_state=False,
                bounded="duration",
            )
            seed = read_pct * 2 + (dist == "zipf")
            out.append(
                MixWorkload(info, names, values, _xsync_schedule(read_pct, dist, seed), True)
            )
    return out


def custom_workload(spec: MixSpec) -> MixWorkload:
    """The user's mix as a workload."""
    keys = list(range(spec.keys))
    values = [_value(i, spec.value_size) for i in keys]
    mix = {op: pct for op, pct in spec.mix.items() if pct}

    def schedule(tid: int) -> tuple[list[str], list[int]]:
        rng = random.Random(7919 + tid)
        ops = cycle_to(shuffled_slots(mix, rng), SCHEDULE_LENGTH)
        return ops, draw_indices(spec.keys, SCHEDULE_LENGTH, spec.distribution, rng)

    reads = sum(pct for op, pct in mix.items() if op in _READS)
    described = ", ".join(f"{pct}% {op}" for op, pct in mix.items())
    info = WorkloadInfo(
        name=spec.name,
        family="custom",
        anchor="user-defined mix in conc-map-bench's shuffled 100-slot schedule",
        description=f"{described}; {spec.keys:,} int keys, {spec.distribution}, "
        f"{'int values' if not spec.value_size else f'{spec.value_size}-byte values'}, "
        f"{'prefilled' if spec.prefill else 'empty at start'}",
        profile=f"{reads}% reads on {spec.keys:,} shared keys"
        + (", a few of them hot" if spec.distribution == "zipf" else ""),
        ops=tuple(sorted(mix)),
        known_state=False,
        bounded="duration",
    )
    return MixWorkload(info, keys, values, schedule, spec.prefill)
