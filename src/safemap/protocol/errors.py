"""Exceptions shared by every safemap map type."""

from __future__ import annotations

__all__ = ["RecursiveUpdateError"]


class RecursiveUpdateError(RuntimeError):
    """A callback or a key's ``__hash__``/``__eq__`` re-entered a map in a way that would
    deadlock or break the atomicity of the call in progress.

    Raised in the offending (inner) call; the map is left unchanged by it. Examples: writing
    to the map from inside a ``compute``/``merge`` callback, or calling the map's own methods
    from inside ``transaction(fn)`` instead of using the view.
    """
