"""Per-instance, opt-in behaviour: a map is switched to a subclass of its own class.

Features that most maps never use (entries with a deadline, hot-key tracking, sampled
latency) must cost nothing on the maps that do not use them. A feature is a *mixin*: a
class with ``__slots__ = ()`` whose methods wrap the map's own (``super()``). Turning a
feature on for one map assigns ``m.__class__`` to the *variant* of the map's plain class
with that set of mixins; turning the last one off assigns the plain class back. Other maps
of the class, and the class itself, never change.

Invariants:
- A variant is ``class <Plain.__name__>(*mixins, Plain)`` with no new slots, so its layout
  is the plain class's and ``__class__`` assignment is allowed (also for the native maps'
  C bases). It keeps the plain class's name, module and qualname: ``repr`` and error
  messages read as before, and ``isinstance(m, Plain)`` holds. ``type(m) is Plain`` does
  not, which the docs say.
- One variant per (plain class, set of mixins), created once and cached, so switching is
  one attribute assignment and variants compare equal by identity.
- Mixins are ordered by their ``variant_rank`` (lowest outermost), never by the order in
  which they were turned on, so every map with the same features has the same MRO.
- Switches are serialized by one module lock: two threads turning on different features
  of one map both take effect. A call already running keeps the methods it started with;
  the next call sees the new class.
- Copies and pickles of a map are of its plain class (``plain_class``): the features
  belong to the instance and its bookkeeping, which a copy does not have.
"""

from __future__ import annotations

import _thread

from .._typing import TypeVar, cast

__all__ = ["features_of", "plain_class", "switch"]

T = TypeVar("T")

_lock = _thread.allocate_lock()
_variants: dict[tuple[type, frozenset[type]], type] = {}


def plain_class(cls: type[T]) -> type[T]:
    """The class the user constructed: ``cls`` itself unless it is a variant."""
    return cast("type[T]", cls.__dict__.get("_variant_plain", cls))


def features_of(obj: object) -> frozenset[type]:
    """The mixins ``obj`` is switched to (empty for a map of its plain class)."""
    features: frozenset[type] = type(obj).__dict__.get("_variant_features", frozenset())
    return features


def _rank(mixin: type) -> tuple[int, str]:
    rank: int = mixin.__dict__["variant_rank"]
    return rank, mixin.__qualname__


def _variant(plain: type, features: frozenset[type]) -> type:
    key = (plain, features)
    cls = _variants.get(key)
    if cls is None:
        mixins = sorted(features, key=_rank)
        namespace = {
            "__slots__": (),
            "__module__": plain.__module__,
            "__qualname__": plain.__qualname__,
            "__doc__": plain.__doc__,
            "_variant_plain": plain,
            "_variant_features": features,
        }
        cls = type(plain.__name__, (*mixins, plain), namespace)
        _variants[key] = cls
    return cls


def switch(obj: object, *, add: type | None = None, remove: type | None = None) -> bool:
    """Turn the mixin ``add`` on and/or ``remove`` off for ``obj``; return whether its
    class changed. A mixin needs ``__slots__ = ()`` and an int ``variant_rank``."""
    with _lock:
        cls = type(obj)
        features = features_of(obj)
        wanted = features
        if add is not None:
            wanted = wanted | {add}
        if remove is not None:
            wanted = wanted - {remove}
        if wanted == features:
            return False
        plain = plain_class(cls)
        obj.__class__ = _variant(plain, wanted) if wanted else plain
        return True
