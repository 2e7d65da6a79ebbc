"""``stress``: random concurrent workloads on a map, recorded and checked for linearizability.

Each history: a fresh map from ``map_factory``, ``threads`` threads released together by a
barrier, each running ``ops`` operations drawn from a seeded generator, keys skewed so that
operations collide (a few hot keys take most of the traffic). On the GIL build the switch
interval is made tiny while the threads run, so they interleave inside operations. Every
call is recorded in a :class:`History` and checked by :func:`check_linearizable`.
The same ``seed`` gives the same operation sequences (the interleaving is up to the OS).
"""

from __future__ import annotations

import contextlib
import operator
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol import DELETE, MISSING
from .checker import Counterexample, MapModel, check_linearizable
from .history import History

__all__ = ["DEFAULT_MIX", "SINGLE_KEY_CALLS", "StressResult", "stress"]


def _add(old: Any, value: Any) -> Any:
    return operator.add(old, value)


def _increment(_key: Any, old: Any) -> Any:
    return 1 if old is MISSING else old + 1


def _drop_even(_key: Any, old: Any) -> Any:
    return DELETE if old % 2 == 0 else old


def _new_value(key: Any) -> Any:
    return 100


def _move(view: Any) -> Any:
    """A transaction: move one unit from ``a`` to ``b`` (both default to 0)."""
    view["a"] = view.get("a", 0) - 1
    view["b"] = view.get("b", 0) + 1
    return view["a"] + view["b"]


def _calls(rng: random.Random, key: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """Every single-key call on ``key``, with small random int values (so CAS often
    matches)."""
    value = rng.randrange(4)
    return [
        ("load", (key,)),
        ("get", (key,)),
        ("__contains__", (key,)),
        ("store", (key, value)),
        ("delete", (key,)),
        ("pop", (key, None)),
        ("setdefault", (key, value)),
        ("load_or_store", (key, value)),
        ("load_and_delete", (key,)),
        ("swap", (key, value)),
        ("compare_and_swap", (key, rng.randrange(4), value)),
        ("compare_and_delete", (key, rng.randrange(4))),
        ("compute", (key, _increment)),
        ("compute_if_absent", (key, _new_value)),
        ("compute_if_present", (key, _drop_even)),
        ("merge", (key, 1, _add)),
    ]


SINGLE_KEY_CALLS = tuple(method for method, _ in _calls(random.Random(0), "k"))
"""The single-key methods :func:`stress` can generate (its ``methods`` parameter)."""


DEFAULT_MIX: dict[str, float] = {"single_key": 0.94, "whole_map": 0.06}
"""Share of single-key calls and of whole-map calls (len, snapshot, items, popitem, ...)."""

_WHOLE_MAP: Sequence[tuple[str, tuple[Any, ...]]] = (
    ("__len__", ()),
    ("snapshot", ()),
    ("items", ()),
    ("keys", ()),
    ("range", ()),
    ("popitem", ()),
    ("transaction", (_move,)),
)


@dataclass
class StressResult:
    """Outcome of :func:`stress`: ``ok`` is ``True`` (every history linearizable),
    ``False`` (``counterexample`` shows the first failure) or ``None`` (some history could
    not be decided within its budget, none failed)."""

    ok: bool | None
    histories: int
    operations: int
    counterexample: Counterexample | None = None
    undecided: int = 0
    elapsed: float = 0.0
    seed: int = 0

    def __bool__(self) -> bool:
        return self.ok is True


def _worker(
    history: History,
    target: Any,
    plan: list[tuple[str, tuple[Any, ...]]],
    barrier: threading.Barrier,
) -> None:
    barrier.wait()
    for method, args in plan:
        # A raised exception is recorded with its class; the checker decides if it was right.
        with contextlib.suppress(Exception):
            history.call(target, method, *args)


def _plan(
    rng: random.Random, ops: int, keys: Sequence[Any], whole_map: float, methods: frozenset[str]
) -> list[tuple[str, tuple[Any, ...]]]:
    hot = keys[: max(1, len(keys) // 4)]
    plan = []
    for _ in range(ops):
        if rng.random() < whole_map:
            plan.append(rng.choice(_WHOLE_MAP))
        else:
            key = rng.choice(hot) if rng.random() < 0.8 else rng.choice(keys)
            plan.append(rng.choice([c for c in _calls(rng, key) if c[0] in methods]))
    return plan


def stress(
    map_factory: Callable[[], Any],
    *,
    threads: int = 4,
    ops: int = 100,
    seed: int = 0,
    histories: int = 10,
    keys: int = 8,
    whole_map: float = DEFAULT_MIX["whole_map"],
    methods: Sequence[str] | None = None,
    model: MapModel | None = None,
    time_budget: float = 10.0,
    stop_on_failure: bool = True,
) -> StressResult:
    """Run ``histories`` random concurrent histories on maps from ``map_factory`` and check
    each for linearizability.

    ``threads`` threads run ``ops`` calls each on ``keys`` keys (a quarter of them take 80%
    of the traffic); ``whole_map`` is the share of whole-map calls (0 keeps every history
    key-partitionable, so checking is fastest); ``methods`` narrows the single-key calls to
    some of :data:`SINGLE_KEY_CALLS`. Works on any object implementing the protocol.
    ``time_budget`` bounds the check of each history.
    """
    chosen = frozenset(SINGLE_KEY_CALLS if methods is None else methods)
    if not chosen or not chosen <= set(SINGLE_KEY_CALLS):
        raise ValueError(f"methods must be a non-empty subset of {SINGLE_KEY_CALLS}")
    if threads < 1 or ops < 1 or histories < 1 or keys < 1:
        raise ValueError("threads, ops, histories and keys must be positive")
    if not 0.0 <= whole_map <= 1.0:
        raise ValueError("whole_map is a share between 0 and 1")
    started = time.monotonic()
    rng = random.Random(seed)
    key_names = [f"k{i}" for i in range(keys)] if keys > 2 else ["a", "b"][:keys]
    if whole_map:
        key_names = sorted(set(key_names) | {"a", "b"})  # the transaction moves a -> b
    result = StressResult(ok=True, histories=0, operations=0, seed=seed)
    old_interval = sys.getswitchinterval()
    for _ in range(histories):
        target = map_factory()
        history = History(initial=dict(target.snapshot().items()))
        plans = [_plan(rng, ops, key_names, whole_map, chosen) for _ in range(threads)]
        barrier = threading.Barrier(threads)
        workers = [
            threading.Thread(target=_worker, args=(history, target, plan, barrier), daemon=True)
            for plan in plans
        ]
        sys.setswitchinterval(1e-6)
        try:
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        finally:
            sys.setswitchinterval(old_interval)
        checked = check_linearizable(history, model, time_budget=time_budget)
        result.histories += 1
        result.operations += checked.operations
        if checked.ok is None:
            result.undecided += 1
            result.ok = None if result.ok else result.ok
        elif checked.ok is False:
            result.ok = False
            result.counterexample = result.counterexample or checked.counterexample
            if stop_on_failure:
                break
    result.elapsed = time.monotonic() - started
    return result
