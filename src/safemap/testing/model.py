"""The sequential specification of the map protocol, as the checker's model.

``apply(method, args, state)`` runs one protocol call against ``state`` (a ``dict`` the model
owns) and returns what a correct map must answer, as an :class:`Outcome`. It is written from
``docs/protocol.md`` directly and shares no code with the maps it checks.

Not modelled as single operations, because the protocol does not make them atomic as a
whole: ``update`` (each key atomic, not the update) and ``delete_if`` (a weakly consistent
pass, then one compare-and-delete per match). Record their parts instead. Iterations are
not linearizable either; the checker treats them specially (see ``checker``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol import DELETE, MISSING
from .history import ITERATION_METHODS

__all__ = [
    "CALL_ARGUMENTS",
    "SINGLE_KEY_METHODS",
    "UNMODELLED_METHODS",
    "Outcome",
    "apply",
    "problem",
]


@dataclass(frozen=True)
class Outcome:
    """What a call must produce: a value, or an exception of type ``error``.

    ``check``, when set, replaces equality: it decides whether a recorded result is one of
    several correct answers (``popitem`` may return any entry) and returns the new state.
    """

    value: Any = None
    error: type[BaseException] | None = None
    check: Callable[[Any], dict[Any, Any] | None] | None = None


_ABSENT: Any = object()


def _same(a: Any, b: Any) -> bool:
    return a is b or bool(a == b)


def _load(state: dict[Any, Any], key: Any) -> Any:
    return state.get(key, _ABSENT)


def _single_key(method: str, args: tuple[Any, ...], state: dict[Any, Any]) -> Outcome:
    key = args[0]
    try:
        hash(key)
    except TypeError:
        return Outcome(error=TypeError)  # an unhashable key: dict's answer
    old = _load(state, key)
    present = old is not _ABSENT

    def result(value: Any) -> Outcome:
        return Outcome(value=value)

    if method == "load":
        return result((old, True) if present else (None, False))
    if method == "get":
        return result(old if present else (args[1] if len(args) > 1 else None))
    if method == "__getitem__":
        return result(old) if present else Outcome(error=KeyError)
    if method == "__contains__":
        return result(present)
    if method in ("store", "__setitem__"):
        state[key] = args[1]
        return result(None)
    if method == "__delitem__":
        if not present:
            return Outcome(error=KeyError)
        del state[key]
        return result(None)
    if method == "delete":
        state.pop(key, None)
        return result(None)
    if method == "pop":
        if present:
            del state[key]
            return result(old)
        return result(args[1]) if len(args) > 1 else Outcome(error=KeyError)
    if method in ("setdefault", "load_or_store"):
        default = args[1] if len(args) > 1 else None
        if not present:
            state[key] = default
        value = old if present else default
        return result(value if method == "setdefault" else (value, present))
    if method == "load_and_delete":
        state.pop(key, None)
        return result((old, True) if present else (None, False))
    if method == "swap":
        state[key] = args[1]
        return result((old, True) if present else (None, False))
    if method == "compare_and_swap":
        if present and _same(old, args[1]):
            state[key] = args[2]
            return result(True)
        return result(False)
    if method == "compare_and_delete":
        if present and _same(old, args[1]):
            del state[key]
            return result(True)
        return result(False)
    try:
        # A callback that raises makes the call raise the same exception and change
        # nothing (the protocol's "exceptions leave no trace").
        if method == "compute":
            new = args[1](key, old if present else MISSING)
        elif method == "compute_if_absent":
            new = old if present else args[1](key)
        elif method == "compute_if_present":
            new = args[1](key, old) if present else DELETE
        else:  # merge, the last single-key method
            new = args[2](old, args[1]) if present else args[1]
    except Exception as exc:
        return Outcome(error=type(exc))
    if new is DELETE:
        state.pop(key, None)
        return result(None)
    state[key] = new
    return result(new)


SINGLE_KEY_METHODS = frozenset(
    {
        "load", "get", "__getitem__", "__contains__", "store", "__setitem__", "__delitem__",
        "delete", "pop", "setdefault", "load_or_store", "load_and_delete", "swap",
        "compare_and_swap", "compare_and_delete", "compute", "compute_if_absent",
        "compute_if_present", "merge",
    }
)  # fmt: skip
"""Methods that touch only the key in ``args[0]`` (the unit of P-compositionality)."""

UNMODELLED_METHODS = frozenset({"update", "delete_if"})
"""Protocol methods with no single-operation model (not atomic as a whole)."""

CALL_ARGUMENTS: dict[str, tuple[int, int]] = {
    "load": (1, 1), "get": (1, 2), "__getitem__": (1, 1), "__contains__": (1, 1),
    "store": (2, 2), "__setitem__": (2, 2), "__delitem__": (1, 1), "delete": (1, 1),
    "pop": (1, 2), "setdefault": (1, 2), "load_or_store": (2, 2), "load_and_delete": (1, 1),
    "swap": (2, 2), "compare_and_swap": (3, 3), "compare_and_delete": (2, 2),
    "compute": (2, 2), "compute_if_absent": (2, 2), "compute_if_present": (2, 2),
    "merge": (3, 3), "__len__": (0, 0), "clear": (0, 0), "snapshot": (0, 0), "copy": (0, 0),
    "__eq__": (1, 1), "popitem": (0, 0), "transaction": (1, 1), "__iter__": (0, 0),
    "keys": (0, 0), "values": (0, 0), "items": (0, 0), "range": (0, 1),
}  # fmt: skip
"""Every call the model replays, with its (fewest, most) positional arguments."""

_CALLBACK_ARGUMENT = {
    "compute": 1, "compute_if_absent": 1, "compute_if_present": 1, "merge": 2,
    "transaction": 0, "range": 0,
}  # fmt: skip


def problem(method: str, args: tuple[Any, ...], result: Any, error: Any) -> str | None:
    """Why a recorded call cannot be replayed on this model (an unknown or unmodelled
    method, a wrong number of arguments, a callback that is not callable, a result of the
    wrong shape), or ``None`` when it can be."""
    if method in UNMODELLED_METHODS:
        return (
            f"{method} is not atomic as a whole, so it has no single-operation model; "
            "record its parts instead"
        )
    if method not in CALL_ARGUMENTS:
        return f"no model for method {method!r}"
    fewest, most = CALL_ARGUMENTS[method]
    if not fewest <= len(args) <= most:
        wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
        return f"{method} takes {wanted} arguments, {len(args)} recorded"
    position = _CALLBACK_ARGUMENT.get(method)
    if position is not None and position < len(args) and not callable(args[position]):
        return f"{method}'s callback {args[position]!r} is not callable"
    if method == "__eq__" and not isinstance(args[0], Mapping):
        return f"__eq__ is modelled against a Mapping, got {type(args[0]).__name__}"
    if error is not None:
        return None
    if method in ITERATION_METHODS:
        if not isinstance(result, (list, tuple)):
            return f"an iteration's result is the list it yielded, got {type(result).__name__}"
        if method in ("items", "range") and not all(_is_pair(item) for item in result):
            return f"{method} yields (key, value) pairs, got {result!r}"
    if method == "popitem" and not _is_pair(result):
        return f"popitem returns a (key, value) pair, got {result!r}"
    if method in ("snapshot", "copy") and not isinstance(result, Mapping):
        return f"{method} returns a Mapping, got {type(result).__name__}"
    return None


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2


def apply(method: str, args: tuple[Any, ...], state: dict[Any, Any]) -> Outcome:
    """Apply one atomic protocol call to ``state`` (mutated in place); return the answer a
    correct map gives. Raises ``ValueError`` for a method with no single-operation model."""
    if method in SINGLE_KEY_METHODS:
        return _single_key(method, args, state)
    if method == "__len__":
        return Outcome(value=len(state))
    if method == "clear":
        state.clear()
        return Outcome(value=None)
    if method in ("snapshot", "copy"):
        expected = dict(state)
        return Outcome(check=lambda got: expected if dict(got.items()) == expected else None)
    if method == "__eq__":
        return Outcome(value=state == dict(args[0].items()))
    if method == "popitem":
        if not state:
            return Outcome(error=KeyError)
        before = dict(state)

        def took_an_entry(got: Any) -> dict[Any, Any] | None:
            key, value = got
            if key in before and _same(before[key], value):
                after = dict(before)
                del after[key]
                return after
            return None

        return Outcome(check=took_an_entry)
    if method == "transaction":
        work = dict(state)
        try:
            value = args[0](work)
        except Exception as exc:
            return Outcome(error=type(exc))
        state.clear()
        state.update(work)
        return Outcome(value=value)
    raise ValueError(f"no single-operation model for {method!r}")
