"""The near cache: a local copy of the fields this process read, kept fresh by the server.

How it stays fresh (server-assisted client-side caching, RESP2, Redis 6+ and Valkey):
- A listener thread holds an *invalidation connection* subscribed to
  ``__redis__:invalidate``. Reads that may fill the cache go through one *tracking
  connection* on which ``CLIENT TRACKING ON REDIRECT <listener id>`` is set, so after such a
  read the server sends the listener a message when the hash is next written.
- Tracking is per key, and the map is one key: any write to the map, by anyone, empties the
  whole cache. The cache suits read-mostly maps.
- Before each read, a fresh placeholder is put in the field's slot; the reply is kept only if
  that very placeholder is still there. An invalidation empties the dict, removing the
  placeholder, so one that races the reply (arrives before the reply is stored) is not lost.
- If the invalidation connection drops, or a PING on it gets no answer within
  ``ping_timeout``, the cache is emptied and bypassed (reads go to the server) until tracking
  is set up again on fresh connections.
- This handle's own writes empty the cache when they return, so it reads its own writes.
- Besides the bytes per field, ``values`` maps a key to its decoded value when that value is
  immutable (str, int, float, bool, None, bytes), so a hit is one dict lookup and returns
  an object no caller can change; mutable values are decoded afresh from the cached bytes.
  Both are filled only while the field's placeholder stands, and emptied together.

Interrupts: the caller-side sections (``get``, ``remember``, ``invalidate``, ``_drop``)
take their lock inside the ``try`` whose ``finally`` releases it, first thing, ignoring
``RuntimeError``; both locks are ``RLock``s, whose release checks the owner, so an
exception a signal handler raises anywhere (``KeyboardInterrupt``) never leaves a lock held
and never releases another thread's hold. (A plain ``with`` can leave the lock held from
CPython 3.14: the handler may run right after ``__enter__`` returns.) The listener thread
gets no signals and uses ``with``.

Staleness bound: after a write by another client returns, this cache may serve the previous
value until the invalidation reaches the listener (one server-to-client hop); if the
invalidation connection silently stops delivering, for at most ``ping_interval +
ping_timeout``, after which the cache is flushed.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from .connection import Endpoint

__all__ = ["NearCache"]

_CHANNEL = b"__redis__:invalidate"
_ABSENT_FIELD: Any = object()  # cached knowledge that the field is absent
_FAILED: Any = object()  # the tracking connection failed during a read
ABSENT: Any = object()  # in ``values``: the key is known to be absent
_IMMUTABLE = (str, int, float, bool, bytes, type(None))


class _Placeholder:
    __slots__ = ()


class NearCache:
    """The local copy of one map's fields, with the listener that keeps it fresh."""

    def __init__(
        self,
        endpoint: Endpoint,
        name: str,
        *,
        ping_interval: float = 0.5,
        ping_timeout: float = 0.5,
    ) -> None:
        self._endpoint = endpoint
        self._name = name
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._state = threading.RLock()  # guards _cache and _healthy
        self._cache: dict[bytes, Any] = {}
        self.values: dict[Any, Any] = {}  # key -> immutable decoded value, or ABSENT
        self._healthy = False
        self._reader = threading.RLock()  # one request at a time on the tracking connection
        self._tracking: Any = None
        self._listener: Any = None
        self._closed = threading.Event()
        self._ready = threading.Event()
        self.misses = 0
        self.flushes = 0
        self._thread = threading.Thread(target=self._listen, daemon=True, name="safemap-near")
        self._thread.start()
        self._ready.wait(5.0)

    # ------------------------------------------------------------------- reading

    def get(self, field: bytes) -> bytes | None:
        """The field's value (``None`` if absent): from the cache when it holds it, else
        from the server through the tracking connection (then cached)."""
        placeholder = _Placeholder()
        state = self._state
        try:
            state.acquire()
            if self._healthy:
                data = self._cache.get(field)
                if data is not None and not isinstance(data, _Placeholder):
                    return None if data is _ABSENT_FIELD else data
                self._cache[field] = placeholder
            healthy = self._healthy
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                state.release()
            except RuntimeError:
                pass  # interrupted before it was taken
        self.misses += 1
        if not healthy:
            result: bytes | None = self._endpoint.read("HGET", self._name, field)
            return result
        reader = self._reader
        try:
            reader.acquire()
            data = self._tracked_hget(field)
        except Exception:
            data = _FAILED  # the cache is off until set up again: ask the server
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                reader.release()
            except RuntimeError:
                pass  # interrupted before it was taken
        if data is _FAILED:
            direct: bytes | None = self._endpoint.read("HGET", self._name, field)
            return direct
        try:
            state.acquire()
            if self._cache.get(field) is placeholder:
                self._cache[field] = _ABSENT_FIELD if data is None else data
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                state.release()
            except RuntimeError:
                pass  # interrupted before it was taken
        return data

    def _tracked_hget(self, field: bytes) -> bytes | None:
        conn = self._tracking
        try:
            # A closed connection would silently reconnect on send, without tracking: refuse.
            if conn is None or getattr(conn, "_sock", None) is None:
                raise ConnectionError("the near cache's tracking connection is closed")
            conn.send_command("HGET", self._name, field)
            reply: bytes | None = conn.read_response()
        except BaseException:
            # First, and no call: the connection may still owe this request's reply (an
            # interrupt between send and read), which the next request would read as its
            # own. Forgotten here, it is never used again (the listener sets a new one up).
            self._tracking = None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.disconnect()
            self._drop("tracking connection failed")
            listener = self._listener
            if listener is not None:  # make the listener set both connections up again
                with contextlib.suppress(Exception):
                    listener.disconnect()
            raise
        return reply

    def remember(self, key: Any, field: bytes, data: bytes | None, value: Any) -> None:
        """Keep ``value`` (decoded from ``data``, just returned by :meth:`get`) for ``key``,
        if it is immutable and ``data`` is still what the cache holds for ``field``."""
        if type(value) not in _IMMUTABLE:
            return
        state = self._state
        try:
            state.acquire()
            held = self._cache.get(field)
            if held is data or (data is None and held is _ABSENT_FIELD):
                self.values[key] = ABSENT if data is None else value
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                state.release()
            except RuntimeError:
                pass  # interrupted before it was taken

    def invalidate(self) -> None:
        """Forget every cached field (after a write by this handle, or an invalidation)."""
        state = self._state
        try:
            state.acquire()
            self._cache.clear()
            self.values.clear()
            self.flushes += 1
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                state.release()
            except RuntimeError:
                pass  # interrupted before it was taken

    def _drop(self, _why: str) -> None:
        # Stop serving from the cache until the listener has set tracking up again.
        state = self._state
        try:
            state.acquire()
            self._healthy = False
            self._cache.clear()
            self.values.clear()
            self.flushes += 1
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                state.release()
            except RuntimeError:
                pass  # interrupted before it was taken

    # ------------------------------------------------------------------ listening

    def _new_connection(self) -> Any:
        # RESP2 (the endpoint's protocol): invalidations arrive as ordinary pub/sub messages.
        conn = self._endpoint.new_connection()
        conn.connect()
        return conn

    def _setup(self) -> Any:
        listener = self._new_connection()
        listener.send_command("CLIENT", "ID")
        listener_id = listener.read_response()
        listener.send_command("SUBSCRIBE", _CHANNEL)
        listener.read_response()  # the subscribe confirmation
        tracking = self._new_connection()
        tracking.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", listener_id)
        tracking.read_response()
        with self._reader:
            old, self._tracking = self._tracking, tracking
        if old is not None:
            old.disconnect()
        with self._state:
            self._cache.clear()
            self.values.clear()
            self._healthy = True
        return listener

    def _listen(self) -> None:
        delay = 0.05
        while not self._closed.is_set():
            listener = None
            try:
                listener = self._listener = self._setup()
                self._ready.set()
                delay = 0.05
                self._serve(listener)
            except Exception:
                self._drop("listener failed")
            finally:
                self._ready.set()
                if listener is not None:
                    listener.disconnect()
            self._closed.wait(delay)
            delay = min(delay * 2, 1.0)

    def _serve(self, listener: Any) -> None:
        awaiting_pong = False
        while not self._closed.is_set():
            wait = self._ping_timeout if awaiting_pong else self._ping_interval
            if not listener.can_read(timeout=wait):
                if awaiting_pong:
                    raise TimeoutError("the invalidation connection missed a PING")
                listener.send_command("PING")
                awaiting_pong = True
                continue
            message = listener.read_response()
            if isinstance(message, list) and message and message[0] == b"pong":
                awaiting_pong = False
            elif isinstance(message, list) and len(message) == 3 and message[1] == _CHANNEL:
                self.invalidate()  # our hash changed (or None: the server flushed all)

    def close(self) -> None:
        self._closed.set()
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.disconnect()
        self._thread.join(5.0)
        with self._reader:
            if self._tracking is not None:
                self._tracking.disconnect()
                self._tracking = None
        self._drop("closed")
