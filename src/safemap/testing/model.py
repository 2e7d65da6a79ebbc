"""The sequential specification of the map protocol, as the checker's model.

``apply(method, args, state)`` runs one protocol call against ``state`` (a ``dict`` the model
owns) and returns what a correct map must answer, as an :class:`Outcome`. It is written from
``shared/spec/map-protocol.md`` directly and shares no code with the maps it checks.

Not modelled as single operations, because the protocol does not make them atomic as a
whole: ``update`` (each key atomic, not the update) and ``delete_if`` (a weakly consistent
pass, then one compare-and-delete per match). Record their parts instead. Iterations are
not linearizable either; the checker treats them specially (see ``checker``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..protocol import DELETE, MISSING

__all__ = ["SINGLE_KEY_METHODS", "UNMODELLED_METHODS", "Outcome", "apply"]


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
    if method == "compute":
        new = args[1](key, old if present else MISSING)
    elif method == "compute_if_absent":
        new = old if present else args[1](key)
    elif method == "compute_if_present":
        new = args[1](key, old) if present else DELETE
    elif method == "merge":
        new = args[2](old, args[1]) if present else args[1]
    else:
        raise ValueError(f"no model for {method!r}")
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
