"""Exceptions shared by every safemap map type."""

from __future__ import annotations

__all__ = ["MapBusyError", "MapClosedError", "RecursiveUpdateError"]


class RecursiveUpdateError(RuntimeError):
    """A callback or a key's ``__hash__``/``__eq__`` re-entered a map in a way that would
    deadlock or break the atomicity of the call in progress.

    Raised in the offending (inner) call; the map is left unchanged by it. Examples: writing
    to the map from inside a ``compute``/``merge`` callback, or calling the map's own methods
    from inside ``transaction(fn)`` instead of using the view.
    """


class MapBusyError(RuntimeError):
    """A map that serves requests from a bounded queue (``ActorMap``) could not accept a
    call in time: its queue stayed full until the call's timeout, a non-blocking call found
    it full, the call waited in the queue past its deadline without being started, or its
    circuit breaker is open after repeated overloads. The call had no effect.
    """


class MapClosedError(RuntimeError):
    """The map was closed (``close()`` or the end of its ``with`` block): it accepts no more
    calls. Raised by calls made after closing, and by queued calls that a close without
    draining rejected; such calls had no effect."""
