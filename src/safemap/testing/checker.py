"""A linearizability checker for map histories (Wing & Gong / Lowe, with P-compositionality).

The question: is there one sequential order of all the operations in a history that (1)
respects real time — if ``a`` returned before ``b`` was invoked, ``a`` comes first — and (2)
gives every operation the result it actually returned when replayed on the sequential model
(``model.apply``)? If so the history is linearizable.

The search (Wing & Gong's, with Lowe's memoization). Each thread's operations are
sequential, so a set of already-linearized operations is just a prefix of each thread's
list: a search state is ``(per-thread position, model state)``. From a state, the next
operation of thread ``t`` may be linearized next iff no other pending operation returned
before it was invoked (its ``invoke`` is at most the smallest ``response`` among the
pending). Depth-first search tries each candidate whose replayed result matches; a state
seen before is not explored again (the memo makes the search polynomial in practice, since
only a few operations are ever concurrent). The history is linearizable iff the search
reaches the state where every thread is done.

Iterations are weakly consistent, not linearizable, and are checked against their own
guarantee inside the same search: an iteration contributes two events, BEGIN and END, both
inside its interval. Between them the search tracks the keys present at every instant
(``always``) and every ``(key, value)`` present at some instant (``ever``); END accepts the
yielded list iff it has no key twice, contains every key of ``always``, and every yielded
item is in ``ever``. The search thus asks whether some placement of the two events explains
the iteration, exactly as the guarantee is worded.

P-compositionality: a history whose operations each touch one key is linearizable iff each
key's sub-history is, so those are checked key by key (small, fast searches). A history
with a whole-map operation (``len``, ``clear``, ``snapshot``, ``popitem``, ``transaction``,
iteration, ...) is checked as one partition: exact, just slower. Nothing is skipped.

Answers: ``ok=True`` (a linearization exists), ``ok=False`` (none exists; a counterexample
explains why), ``ok=None`` (a budget ran out first: never a guess). Two budgets bound a
check: ``time_budget`` (seconds) and ``state_budget`` (search states explored, over the
whole history); the second gives the same answer for a history on every machine.
"""

from __future__ import annotations

import math
import reprlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import ITERATION_METHODS, History, Operation, by_time, describe_call
from .model import SINGLE_KEY_METHODS, Outcome, apply, problem

__all__ = ["Counterexample", "LinearizabilityResult", "MapModel", "check_linearizable"]

READ_ONLY_METHODS = frozenset(
    {"load", "get", "__getitem__", "__contains__", "__len__", "snapshot", "copy", "__eq__"}
    | ITERATION_METHODS
)
"""Methods that cannot change the map: dropping them can only make a history easier to
linearize, so a counterexample stays one when they are removed (used to shrink it)."""


class MapModel:
    """The sequential model of the map protocol used by :func:`check_linearizable`.

    Subclass it to check another concurrent object: override :meth:`apply` (run one call on
    a state ``dict`` the model owns, return the correct :class:`~safemap.testing.model.Outcome`),
    :meth:`partition_key` (the key a call touches, or ``None`` when it touches everything),
    :meth:`is_iteration` and :meth:`validate` (which calls it can replay).
    """

    def validate(self, op: Operation) -> str | None:
        """Why ``op`` cannot be replayed on this model, or ``None`` if it can.
        :func:`check_linearizable` asks it of every operation before searching."""
        return problem(op.method, op.args, op.result, op.error)

    def apply(self, method: str, args: tuple[Any, ...], state: dict[Any, Any]) -> Outcome:
        """Apply one atomic call to ``state`` in place; return the correct outcome."""
        return apply(method, args, state)

    def partition_key(self, op: Operation) -> Any:
        """The one key ``op`` touches, or ``None`` if it may touch every key."""
        return op.args[0] if op.method in SINGLE_KEY_METHODS else None

    def is_iteration(self, op: Operation) -> bool:
        """Whether ``op`` is a weakly consistent iteration (checked by BEGIN/END events)."""
        return op.method in ITERATION_METHODS


@dataclass
class Counterexample:
    """Why a history is not linearizable.

    ``operations`` is the smallest failing sub-history found (one key's operations when the
    history is partitioned, with read-only operations removed where the failure does not
    need them). ``explained`` is the longest order of its operations that the model could
    explain; ``unexplained`` lists each operation that could have come next, with what the
    model says it should have returned. ``str()`` prints both and a timeline.
    """

    operations: list[Operation]
    explained: list[tuple[str, Operation]]
    unexplained: list[tuple[Operation, str]]

    def focus(self, limit: int = 24) -> list[Operation]:
        """The operations nearest the failure: those on the unexplained operations' keys
        (and whole-map ones), closest in time to the failure first, at most ``limit``."""
        if not self.unexplained:
            return self.operations[:limit]
        keys = {_key_of(op) for op, _ in self.unexplained}
        moment = min(op.invoke for op, _ in self.unexplained)
        related = [op for op in self.operations if _key_of(op) in keys or _key_of(op) is None]
        related.sort(key=lambda op: abs(op.invoke - moment))
        return related[:limit]

    def timeline(self, width: int = 48, limit: int = 24) -> str:
        """The operations around the failure (see :meth:`focus`) drawn on a common time
        axis, one line each, grouped by thread; ``!!`` marks the unexplained ones."""
        ops = sorted(self.focus(limit), key=lambda op: (op.thread, op.invoke))
        if not ops:
            return "(empty history)"
        start = min(op.invoke for op in ops)
        span = max(op.response for op in ops) - start or 1
        flagged = {op.id for op, _ in self.unexplained}
        lines = []
        for op in ops:
            a = (op.invoke - start) * (width - 1) // span
            b = max(a, (op.response - start) * (width - 1) // span)
            bar = " " * a + "[" + "-" * max(0, b - a - 1) + ("]" if b > a else "")
            mark = "!!" if op.id in flagged else "  "
            lines.append(f"T{op.thread:<2} |{bar:<{width}}| {mark} #{op.id} {op.describe()}")
        hidden = len(self.operations) - len(ops)
        if hidden:
            lines.append(f"    ({hidden} more operations of this sub-history not shown)")
        return "\n".join(lines)

    def __str__(self) -> str:
        tail = self.explained[-12:]
        order = ", ".join(f"#{op.id}{'' if event == 'op' else ' ' + event}" for event, op in tail)
        if len(self.explained) > len(tail):
            order = f"... ({len(self.explained) - len(tail)} earlier), " + order
        why = "\n".join(f"  #{op.id} {op.describe()}: {reason}" for op, reason in self.unexplained)
        return (
            f"history is not linearizable ({len(self.operations)} operations in the failing "
            "sub-history)\n"
            f"timeline around the failure (!! = cannot be explained next):\n{self.timeline()}\n"
            f"longest explainable order: {order or '(none)'}\n"
            f"then no operation can come next:\n{why}"
        )


def _key_of(op: Operation) -> Any:
    return _freeze(op.args[0]) if op.method in SINGLE_KEY_METHODS else None


@dataclass
class LinearizabilityResult:
    """The checker's answer. ``ok`` is ``True``, ``False`` or ``None`` (unknown: a budget
    ran out); ``counterexample`` is set exactly when ``ok`` is ``False``."""

    ok: bool | None
    counterexample: Counterexample | None = None
    operations: int = 0
    partitions: int = 0
    states_explored: int = 0
    elapsed: float = 0.0
    note: str = ""

    def __bool__(self) -> bool:
        return self.ok is True


class _OutOfBudget(Exception):
    """A budget ran out (``note``: which)."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


_ABSENT: Any = object()


def _freeze(value: Any) -> Any:
    """A hashable token for ``value``: itself if hashable, else its identity (still sound for
    the memo: distinct tokens only cost a revisit)."""
    try:
        hash(value)
    except TypeError:
        return ("<unhashable>", id(value))
    return value


def _items(state: dict[Any, Any]) -> frozenset[tuple[Any, Any]]:
    return frozenset((k, _freeze(v)) for k, v in state.items())


@dataclass
class _Node:
    pos: tuple[int, ...]
    phase: tuple[int, ...]
    state: dict[Any, Any]
    iters: tuple[tuple[int, frozenset[Any], frozenset[Any]], ...]
    parent: _Node | None = None
    event: tuple[str, Operation] | None = None
    depth: int = 0


@dataclass
class _Search:
    lanes: list[list[Operation]]
    model: MapModel
    deadline: float
    max_states: float = math.inf  # states this search may explore (the budget left)
    explored: int = 0
    deepest: _Node | None = None
    seen: set[Any] = field(default_factory=set)

    def run(self, initial: dict[Any, Any]) -> _Node | None:
        """The final node of a linearization, or ``None`` if none exists."""
        n = len(self.lanes)
        root = _Node((0,) * n, (0,) * n, dict(initial), ())
        self.deepest = root
        stack = [root]
        while stack:
            node = stack.pop()
            key = (node.pos, node.phase, _items(node.state), node.iters)
            if key in self.seen:
                continue
            self.seen.add(key)
            self.explored += 1
            if self.explored > self.max_states:
                raise _OutOfBudget("state budget")
            if self.explored % 512 == 0 and time.monotonic() > self.deadline:
                raise _OutOfBudget("time budget")
            if node.depth > self.deepest.depth:
                self.deepest = node
            if all(p == len(lane) for p, lane in zip(node.pos, self.lanes, strict=True)):
                return node
            children = [child for child, _ in self.expand(node) if child is not None]
            stack.extend(reversed(children))
        return None

    def pending(self, node: _Node) -> list[tuple[int, Operation]]:
        return [
            (t, lane[node.pos[t]]) for t, lane in enumerate(self.lanes) if node.pos[t] < len(lane)
        ]

    def expand(self, node: _Node) -> list[tuple[_Node | None, tuple[Operation, str]]]:
        """Every candidate next event, as ``(child or None, (op, why it failed))``."""
        pending = self.pending(node)
        horizon = min(op.response for _, op in pending)
        out: list[tuple[_Node | None, tuple[Operation, str]]] = []
        for t, op in pending:
            if self.model.is_iteration(op):
                if node.phase[t] == 0:
                    if op.invoke <= horizon:
                        keys = frozenset(node.state)
                        iters = (*node.iters, (t, keys, _items(node.state)))
                        begun = self.child(node, t, op, "begin", node.state, iters, advance=False)
                        out.append((begun, (op, "")))
                else:
                    reason = _iteration_failure(op, next(e for e in node.iters if e[0] == t))
                    iters = tuple(entry for entry in node.iters if entry[0] != t)
                    ended = None if reason else self.child(node, t, op, "end", node.state, iters)
                    out.append((ended, (op, reason)))
            elif op.invoke <= horizon:
                state = dict(node.state)
                outcome = self.model.apply(op.method, op.args, state)
                state, reason = _match(op, outcome, state)
                if reason:
                    out.append((None, (op, reason)))
                    continue
                iters = tuple(
                    (it, always & state.keys(), ever | _items(state))
                    for it, always, ever in node.iters
                )
                out.append((self.child(node, t, op, "op", state, iters), (op, "")))
        return out

    def child(
        self,
        node: _Node,
        t: int,
        op: Operation,
        event: str,
        state: dict[Any, Any],
        iters: tuple[tuple[int, frozenset[Any], frozenset[Any]], ...],
        advance: bool = True,
    ) -> _Node:
        pos = list(node.pos)
        phase = list(node.phase)
        if advance:
            pos[t] += 1
            phase[t] = 0
        else:
            phase[t] = 1
        frozen_iters = tuple((it, frozenset(always), frozenset(ever)) for it, always, ever in iters)
        return _Node(
            tuple(pos), tuple(phase), state, frozen_iters, node, (event, op), node.depth + 1
        )


def _match(op: Operation, outcome: Outcome, state: dict[Any, Any]) -> tuple[dict[Any, Any], str]:
    """``(new state, "")`` if ``op``'s recorded result is correct, else ``(state, why)``."""
    if outcome.error is not None:
        if op.error is not None and issubclass(op.error, outcome.error):
            return state, ""
        got = f"raised {op.error.__name__}" if op.error else f"returned {op.result!r}"
        return state, f"should raise {outcome.error.__name__}, {got}"
    if op.error is not None:
        return state, f"raised {op.error.__name__}, should not raise"
    if outcome.check is not None:
        after = outcome.check(op.result)
        if after is None:
            return state, f"{op.result!r} is not a correct answer here (state {state!r})"
        return after, ""
    if op.result is outcome.value or op.result == outcome.value:
        return state, ""
    return state, f"should return {outcome.value!r}"


def _iteration_failure(op: Operation, tracking: tuple[int, frozenset[Any], frozenset[Any]]) -> str:
    """Why ``op`` (an iteration ending now, with its ``(lane, always, ever)`` tracking)
    breaks weak consistency, or ``""``."""
    if op.error is not None:
        return f"iteration raised {op.error.__name__}"
    _, always, ever = tracking
    yielded: list[Any] = list(op.result)
    if op.method == "values":
        values = {v for _, v in ever}
        stray = [v for v in yielded if _freeze(v) not in values]
        if stray:
            return f"yielded value {stray[0]!r} that no entry held during the iteration"
        if len(yielded) < len(always):
            return f"yielded {len(yielded)} values but {len(always)} keys were present throughout"
        return ""
    keys = [k for k, _ in yielded] if op.method in ("items", "range") else yielded
    # A key yielded twice is reported first: that is wrong under every linearization, while
    # the other symptoms depend on the order the search was trying.
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        return f"yielded key {twice!r} twice"
    if op.method in ("items", "range"):
        stale = [(k, v) for k, v in yielded if (k, _freeze(v)) not in ever]
        if stale:
            return f"yielded {stale[0]!r}, an entry the map never held during the iteration"
    else:
        ever_keys = {k for k, _ in ever}
        stray = [k for k in keys if k not in ever_keys]
        if stray:
            return f"yielded key {stray[0]!r} that was never present during the iteration"
    missed = always - set(keys)
    if missed:
        return f"missed key {next(iter(missed))!r}, present for the whole iteration"
    return ""


def _lanes(ops: Sequence[Operation]) -> list[list[Operation]]:
    by_thread: dict[int, list[Operation]] = {}
    for op in sorted(ops, key=by_time):
        by_thread.setdefault(op.thread, []).append(op)
    return list(by_thread.values())


def _partitions(ops: Sequence[Operation], model: MapModel) -> list[tuple[Any, list[Operation]]]:
    keyed: dict[Any, list[Operation]] = {}
    for op in ops:
        key = model.partition_key(op)
        if key is None:
            return [(None, list(ops))]
        # An unhashable key touches no entry (the call raises TypeError): alone is right.
        keyed.setdefault(_freeze(key), []).append(op)
    return list(keyed.items())


def _check_partition(
    ops: Sequence[Operation],
    initial: dict[Any, Any],
    model: MapModel,
    deadline: float,
    max_states: float = math.inf,
) -> tuple[bool, _Search]:
    search = _Search(_lanes(ops), model, deadline, max_states)
    return search.run(initial) is not None, search


def _counterexample(
    ops: list[Operation], initial: dict[Any, Any], model: MapModel, deadline: float
) -> Counterexample:
    """Shrink a failing partition by dropping read-only operations it does not need, then
    explain the deepest point the search reached."""
    kept = list(ops)
    for op in sorted(ops, key=lambda o: -o.invoke):
        if op.method not in READ_ONLY_METHODS or time.monotonic() > deadline:
            continue
        trial = [o for o in kept if o.id != op.id]
        try:
            still_fails = not _check_partition(trial, initial, model, deadline)[0]
        except _OutOfBudget:
            break
        if still_fails:
            kept = trial
    search = _Search(_lanes(kept), model, float("inf"))
    search.run(initial)
    deepest = search.deepest
    assert deepest is not None
    explained: list[tuple[str, Operation]] = []
    node: _Node | None = deepest
    while node is not None and node.event is not None:
        explained.append(node.event)
        node = node.parent
    explained.reverse()
    unexplained = [
        (op, reason or "cannot be placed next") for child, (op, reason) in search.expand(deepest)
    ]
    return Counterexample(kept, explained, unexplained)


def check_linearizable(
    history: History | Iterable[Operation],
    model: MapModel | None = None,
    *,
    initial: dict[Any, Any] | None = None,
    time_budget: float = 10.0,
    state_budget: int | None = None,
) -> LinearizabilityResult:
    """Decide whether ``history`` is linearizable with respect to ``model``.

    ``model`` defaults to the map protocol's sequential specification (:class:`MapModel`);
    ``initial`` to the history's ``initial`` contents (or empty). Iterations are checked
    against weak consistency (see the module documentation). Returns ``ok=True`` when a
    linearization exists, ``ok=False`` with a ``counterexample`` when none does, and
    ``ok=None`` when ``time_budget`` seconds, or ``state_budget`` search states (``None``:
    no bound), were not enough to decide. The state budget makes the answer a function of
    the history alone (the same on a slow machine), so a test can demand a decision;
    ``states_explored`` of a result tells how much a history took.

    A malformed history gets no verdict: ``TypeError`` (an entry that is not an
    :class:`Operation`, or a field of the wrong type) or ``ValueError`` (an operation that
    responds before it is invoked, two operations of one thread that overlap, an id used
    twice, a call the model cannot replay), naming the first offending entry.
    """
    started = time.monotonic()
    positive_seconds("time_budget", time_budget)
    positive_states("state_budget", state_budget)
    deadline = started + time_budget
    states_left: float = math.inf if state_budget is None else state_budget
    model = MapModel() if model is None else require_model(model)
    if isinstance(history, History):
        entries: list[Any] = history.operations()
        initial = history.initial if initial is None else initial
    elif isinstance(history, Iterable):
        entries = list(history)
    else:
        raise TypeError(
            f"history must be a History or an iterable of Operations, got {type(history).__name__}"
        )
    if initial is not None and not isinstance(initial, Mapping):
        raise TypeError(f"initial must be a Mapping, got {type(initial).__name__}")
    initial = dict(initial or {})
    ops = _validated(entries, model)
    result = LinearizabilityResult(ok=True, operations=len(ops))
    try:
        for key, part in _partitions(ops, model):
            result.partitions += 1
            part_initial = (
                initial if key is None else ({key: initial[key]} if key in initial else {})
            )
            search = _Search(_lanes(part), model, deadline, states_left)
            try:
                ok = search.run(part_initial) is not None
            finally:
                result.states_explored += search.explored
            states_left -= search.explored
            if not ok:
                result.ok = False
                result.counterexample = _counterexample(part, part_initial, model, deadline + 5)
                break
    except _OutOfBudget as out:
        result.ok = None
        result.note = (
            f"state budget of {state_budget} states exhausted before a decision"
            if out.note == "state budget"
            else f"time budget of {time_budget}s exhausted before a decision"
        )
    result.elapsed = time.monotonic() - started
    return result


def positive_seconds(name: str, value: Any) -> None:
    """``TypeError``/``ValueError`` unless ``value`` is a positive, finite number of seconds."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite (seconds), got {value}")


def positive_states(name: str, value: Any) -> None:
    """``TypeError``/``ValueError`` unless ``value`` is ``None`` or a positive ``int``."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def require_model(model: Any) -> MapModel:
    """``model`` if it is a :class:`MapModel` instance, else ``TypeError``."""
    if not isinstance(model, MapModel):
        raise TypeError(f"model must be a MapModel instance, got {model!r}")
    return model


def _validated(entries: list[Any], model: MapModel) -> list[Operation]:
    """``entries`` sorted by invocation, once each has been checked to be a well-formed
    operation the model can replay; else ``TypeError``/``ValueError`` naming the first
    entry at fault (by its index in ``entries``)."""
    for index, op in enumerate(entries):
        where = f"history entry {index}"
        if not isinstance(op, Operation):
            raise TypeError(f"{where} is not an Operation: {reprlib.repr(op)}")
        if not isinstance(op.method, str) or not isinstance(op.args, tuple):
            raise TypeError(f"{where}: method must be a str and args a tuple, got {op!r}")
        where = f"{where} (#{op.id} {describe_call(op.method, op.args)})"
        for name in ("invoke", "response"):
            stamp = getattr(op, name)
            if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
                raise TypeError(f"{where}: {name} must be a number, got {stamp!r}")
            if math.isnan(stamp):
                raise ValueError(f"{where}: {name} is NaN")
        if op.response < op.invoke:
            raise ValueError(
                f"{where} responds (at {op.response}) before it is invoked (at {op.invoke})"
            )
        if op.error is not None and not (
            isinstance(op.error, type) and issubclass(op.error, BaseException)
        ):
            raise TypeError(f"{where}: error must be an exception class or None, got {op.error!r}")
        for name in ("id", "thread"):
            number = getattr(op, name)
            if not isinstance(number, int) or isinstance(number, bool):
                raise TypeError(f"{where}: {name} must be an int, got {number!r}")
        reason = model.validate(op)
        if reason:
            raise ValueError(f"{where}: {reason}")
    index_of: dict[int, int] = {}
    for index, op in enumerate(entries):
        first = index_of.setdefault(op.id, index)
        if first != index:
            raise ValueError(f"history entries {first} and {index} have the same id {op.id!r}")
    ops: list[Operation] = sorted(entries, key=by_time)
    last: dict[int, Operation] = {}
    for op in ops:
        previous = last.get(op.thread)
        if previous is not None and op.invoke < previous.response:
            raise ValueError(
                f"history entries {index_of[previous.id]} (#{previous.id}) and "
                f"{index_of[op.id]} (#{op.id}) overlap in thread {op.thread!r}: a thread's "
                "calls are sequential, each invoked after the previous one responded"
            )
        last[op.thread] = op
    return ops
