"""``stress``: random concurrent workloads on a map, recorded and checked for linearizability.

Each history: a fresh map from ``map_factory``, ``threads`` threads released together by a
barrier, each running ``ops`` operations drawn from a seeded generator, keys skewed so that
operations collide (a few hot keys take most of the traffic). On the GIL build the switch
interval is made tiny while the threads run, so they interleave inside operations. Every
call is recorded in a :class:`History` and checked by :func:`check_linearizable`.
The same ``seed`` gives the same operation sequences (the interleaving is up to the OS).

Each history's run is bounded by ``run_timeout``: threads still inside a call when it
expires are reported, with their stacks, as :class:`StuckOperationsError` (a map that
blocks fails the run instead of hanging it).
"""

from __future__ import annotations

import contextlib
import operator
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._frames import current_frames
from ..protocol import DELETE, MISSING
from .checker import (
    Counterexample,
    MapModel,
    check_linearizable,
    positive_seconds,
    positive_states,
    require_model,
)
from .history import History, describe_call

__all__ = [
    "DEFAULT_MIX",
    "SINGLE_KEY_CALLS",
    "StressResult",
    "StuckOperation",
    "StuckOperationsError",
    "stress",
]


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


@dataclass(frozen=True)
class StuckOperation:
    """A call of :func:`stress` that had not returned when ``run_timeout`` expired."""

    worker: int
    """The worker thread's index, ``0 .. threads - 1``."""
    call: str
    """The call in progress, e.g. ``merge('k0', 1, _add)``."""
    stack: str
    """The worker thread's stack when the run was abandoned (innermost frame last)."""
    thread: threading.Thread
    """The worker thread, still blocked (a daemon thread): once the map is unblocked it
    stops at its next call, so it can be joined."""


class StuckOperationsError(AssertionError):
    """:func:`stress` failed: some calls on the map did not return within ``run_timeout``.

    A correct map never blocks on its own, so this is a failure of the map under test (a
    deadlock, a lost wake-up, a lock never released). ``stuck`` lists each call still in
    progress with its thread's stack. The stuck threads cannot be stopped from outside:
    they stay blocked in the map (as daemon threads), so discard the map.
    """

    def __init__(
        self, stuck: list[StuckOperation], *, run_timeout: float, history: int, seed: int,
        threads: int, waiting: int,
    ) -> None:  # fmt: skip
        self.stuck = stuck
        self.run_timeout = run_timeout
        self.history = history
        self.seed = seed
        lines = [
            f"stress: {len(stuck)} of {threads} threads did not return from a call within "
            f"run_timeout={run_timeout}s (history {history}, seed {seed}); "
            "the map blocked in these calls:"
        ]
        for op in stuck:
            lines.append(f"worker {op.worker}: {op.call}")
            lines.append(op.stack.rstrip("\n"))
        if waiting:
            lines.append(f"({waiting} other workers never started: they wait for worker 0.)")
        lines.append("The stuck threads stay blocked in the map (daemon threads): discard it.")
        super().__init__("\n".join(lines))


_INITIAL = -1  # worker 0 is taking the initial snapshot
_WAITING = -2  # waiting at the barrier for every worker to be ready
_DONE = -3  # every call made (or the run was abandoned)


class _Run:
    """One history's worker threads: their plans, how far each got, and the stop flag.

    ``position[w]`` is the index in ``plans[w]`` of the call worker ``w`` is making, or one
    of the markers above; only worker ``w`` writes it, the main thread reads it once the
    run has timed out, to name the stuck calls.
    """

    def __init__(self, history: History, target: Any, plans: list[list[tuple[str, Any]]]):
        self.history = history
        self.target = target
        self.plans = plans
        self.position = [_WAITING] * len(plans)
        self.barrier = threading.Barrier(len(plans))
        self.stop = threading.Event()
        self.setup_error: Exception | None = None
        self.threads = [
            threading.Thread(target=self.work, args=(w,), name=f"stress-worker-{w}", daemon=True)
            for w in range(len(plans))
        ]

    def work(self, worker: int) -> None:
        try:
            if worker == 0:
                # Inside the bounded run: a map whose snapshot blocks is reported too.
                self.position[0] = _INITIAL
                self.history.initial = dict(self.target.snapshot().items())
                self.position[0] = _WAITING
            self.barrier.wait()  # released together, so the calls collide
        except threading.BrokenBarrierError:
            return  # abandoned before the calls started
        except Exception as exc:  # the initial snapshot failed: the caller re-raises it
            self.setup_error = exc
            self.barrier.abort()
            return
        for index, (method, args) in enumerate(self.plans[worker]):
            if self.stop.is_set():
                break  # abandoned: a thread unblocked late makes no further calls
            self.position[worker] = index
            # A raised exception is recorded with its class; the checker decides if it was
            # right.
            with contextlib.suppress(Exception):
                self.history.call(self.target, method, *args)
        self.position[worker] = _DONE

    def run(self, timeout: float) -> list[StuckOperation]:
        """Start the workers and wait at most ``timeout`` seconds; return the calls still
        in progress then (the run is abandoned if there are any)."""
        try:
            for thread in self.threads:
                thread.start()
        except BaseException:
            self.abandon()
            raise
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        frames = current_frames()
        stuck = []
        for worker, thread in enumerate(self.threads):
            position = self.position[worker]
            if not thread.is_alive() or position in (_WAITING, _DONE):
                continue
            call = (
                "snapshot() (the initial contents)"
                if position == _INITIAL
                else describe_call(*self.plans[worker][position])
            )
            frame = frames.get(thread.ident) if thread.ident is not None else None
            stuck.append(StuckOperation(worker, call, _stack(frame), thread))
        if stuck:
            self.abandon()
        return stuck

    def abandon(self) -> None:
        self.stop.set()
        self.barrier.abort()


def _stack(frame: Any) -> str:
    """``frame``'s stack as a traceback prints it, from the worker's own frame inward (the
    thread bootstrap frames above it say nothing)."""
    if frame is None:
        return "  (no stack: the thread has just finished)\n"
    summary = list(traceback.extract_stack(frame))
    while len(summary) > 1 and summary[0].filename == threading.__file__:
        del summary[0]
    return "".join(traceback.format_list(summary))


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
    state_budget: int | None = None,
    run_timeout: float = 60.0,
    stop_on_failure: bool = True,
) -> StressResult:
    """Run ``histories`` random concurrent histories on maps from ``map_factory`` and check
    each for linearizability.

    ``threads`` threads run ``ops`` calls each on ``keys`` keys (a quarter of them take 80%
    of the traffic); ``whole_map`` is the share of whole-map calls (0 keeps every history
    key-partitionable, so checking is fastest); ``methods`` narrows the single-key calls to
    some of :data:`SINGLE_KEY_CALLS`. Works on any object implementing the protocol.
    ``time_budget`` (seconds) and ``state_budget`` (search states, ``None``: no bound)
    bound the check of each history (``check_linearizable``); ``run_timeout`` bounds each
    history's run (the initial snapshot and every call): if a thread is still inside a call
    when it expires, :class:`StuckOperationsError` is raised, naming each stuck call with
    its thread's stack. Invalid arguments raise ``TypeError`` or ``ValueError`` before
    anything runs.
    """
    chosen = _validate(locals())
    started = time.monotonic()
    rng = random.Random(seed)
    key_names = [f"k{i}" for i in range(keys)] if keys > 2 else ["a", "b"][:keys]
    if whole_map:
        key_names = sorted(set(key_names) | {"a", "b"})  # the transaction moves a -> b
    result = StressResult(ok=True, histories=0, operations=0, seed=seed)
    old_interval = sys.getswitchinterval()
    for index in range(histories):
        target = map_factory()
        _check_target(target, chosen, whole_map)
        history = History()
        plans = [_plan(rng, ops, key_names, whole_map, chosen) for _ in range(threads)]
        run = _Run(history, target, plans)
        sys.setswitchinterval(1e-6)
        try:
            stuck = run.run(run_timeout)
        finally:
            sys.setswitchinterval(old_interval)
        if stuck:
            waiting = sum(1 for position in run.position if position == _WAITING)
            raise StuckOperationsError(
                stuck, run_timeout=run_timeout, history=index, seed=seed, threads=threads,
                waiting=waiting,
            )  # fmt: skip
        if run.setup_error is not None:
            raise run.setup_error
        checked = check_linearizable(
            history, model, time_budget=time_budget, state_budget=state_budget
        )
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


def _validate(arguments: dict[str, Any]) -> frozenset[str]:
    """Check :func:`stress`'s arguments (its ``locals()``); return the chosen methods."""
    if not callable(arguments["map_factory"]):
        raise TypeError(f"map_factory must be callable, got {arguments['map_factory']!r}")
    for name in ("threads", "ops", "histories", "keys", "seed"):
        value = arguments[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if name != "seed" and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    whole_map = arguments["whole_map"]
    if not isinstance(whole_map, (int, float)) or isinstance(whole_map, bool):
        raise TypeError(f"whole_map must be a number, got {whole_map!r}")
    if not 0.0 <= whole_map <= 1.0:  # NaN fails too
        raise ValueError(f"whole_map is a share between 0 and 1, got {whole_map}")
    positive_seconds("time_budget", arguments["time_budget"])
    positive_states("state_budget", arguments["state_budget"])
    positive_seconds("run_timeout", arguments["run_timeout"])
    methods = arguments["methods"]
    if isinstance(methods, str):
        raise TypeError(f"methods must be a sequence of method names, not the string {methods!r}")
    chosen = frozenset(SINGLE_KEY_CALLS if methods is None else methods)
    if not chosen or not chosen <= set(SINGLE_KEY_CALLS):
        raise ValueError(
            f"methods must be a non-empty subset of {SINGLE_KEY_CALLS}, got {sorted(chosen)}"
        )
    if arguments["model"] is not None:
        require_model(arguments["model"])
    return chosen


def _check_target(target: Any, chosen: frozenset[str], whole_map: float) -> None:
    """``TypeError`` unless ``target`` has every method the run may call: a plain ``dict``
    would otherwise fail every call and be reported as non-linearizable."""
    needed = {"snapshot"} | chosen
    if whole_map:
        needed |= {method for method, _ in _WHOLE_MAP}
    missing = sorted(name for name in needed if not callable(getattr(target, name, None)))
    if missing:
        raise TypeError(
            f"map_factory() returned a {type(target).__name__}, which lacks "
            f"{', '.join(missing)}: stress() needs an object implementing the map protocol"
        )
