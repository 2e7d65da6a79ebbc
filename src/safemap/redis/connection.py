"""Connecting to Redis, sending commands, and turning redis-py's failures into this
package's errors.

Invariants:
- Every call of :meth:`Endpoint.call`, :meth:`Endpoint.read`, :meth:`Endpoint.script` or
  :meth:`Endpoint.pipeline` is one round trip (one send, then its replies), except that a
  script unknown to the server (first use, restart, SCRIPT FLUSH) is loaded and run in one
  extra trip. The map's cost model rests on this: ``tests/redis/test_redis_round_trips.py``
  counts the trips on the wire.
- Commands go straight to a redis-py ``Connection`` taken from this endpoint's own idle
  list (a list pop and append: atomic on every build, no lock). A connection goes back to
  the list only after every reply it owed was read; after any other failure (lost
  connection, timeout, an exception in the middle of a read) it is dropped, so no reply
  meant for one call can reach another.
- The connections never retry a command on their own (redis-py retries by default, which
  could apply a write twice); :meth:`Endpoint.read` retries idempotent reads only.
- No message built here contains a password or a URL: an endpoint is named by host:port.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..protocol.errors import MapClosedError
from .errors import RedisConnectionError

_hiredis_pack: Any
try:  # hiredis packs a command in C (redis-py's packer runs Python code per argument)
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is optional
    _hiredis_pack = None

__all__ = ["DEFAULT_URL", "Endpoint", "Script", "hiredis_packed"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def hiredis_packed(args: Sequence[Any]) -> bytes:
    """``args`` (bytes, str, int or float) as one command in the wire format, packed by
    hiredis in C. An exception raised meanwhile (a signal handler's ``KeyboardInterrupt``)
    propagates like any other; it never crashes the process.

    Only bytes and str reach hiredis. It turns an int or a float into text with
    ``repr()`` without checking the result, and ``repr()`` first runs any pending signal
    handler: one that raised there (Ctrl-C) made hiredis dereference NULL. Converted
    here, in Python, the same text is made and an interrupt is raised normally."""
    return _hiredis_pack(  # type: ignore[no-any-return]
        tuple(
            arg
            if type(arg) is bytes or type(arg) is str
            else repr(arg)
            if type(arg) is int or isinstance(arg, float)
            else arg  # anything else: hiredis refuses it with TypeError, as before
            for arg in args
        )
    )


class Script:
    """A Lua script, run by SHA (EVALSHA); the source is sent only when the server lacks it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class Endpoint:
    """One server as seen by one map: its connections (never retrying by themselves), the
    place's name for messages, and the policy for retrying idempotent reads."""

    __slots__ = (
        "_closed",
        "_connection_class",
        "_idle",
        "_packer",
        "connection_kwargs",
        "place",
        "read_retries",
    )

    def __init__(
        self,
        url: str | None,
        client: Any,
        *,
        timeout: float | None,
        connect_timeout: float | None,
        read_retries: int,
    ) -> None:
        if client is not None:
            # Reuse the client's settings (host, credentials, TLS), not its retry policy.
            kwargs = dict(client.connection_pool.connection_kwargs)
            connection_class = client.connection_pool.connection_class
        else:
            url = url or os.environ.get("SAFEMAP_REDIS_URL") or DEFAULT_URL
            pool = redis.ConnectionPool.from_url(url)
            kwargs = dict(pool.connection_kwargs)
            connection_class = pool.connection_class
        kwargs.update(
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            decode_responses=False,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            protocol=2,  # plain replies (HGETALL is a flat list), and the near cache's pub/sub
        )
        kwargs.pop("retry_on_timeout", None)
        self.connection_kwargs = kwargs
        self._connection_class = connection_class
        self._idle: list[Any] = []
        self._closed = False
        self._packer = self.new_connection()  # never connected: it only encodes commands
        path = kwargs.get("path")
        self.place = f"unix socket {path}" if path else f"{kwargs.get('host')}:{kwargs.get('port')}"
        self.read_retries = read_retries

    # ------------------------------------------------------------------ connections

    def new_connection(self) -> Any:
        """A new connection with this endpoint's settings, not yet connected (it connects
        on its first send)."""
        return self._connection_class(**self.connection_kwargs)

    def after_fork_in_child(self) -> None:
        # The parent's sockets must not be shared: forget them (redis-py closes an
        # inherited socket without shutting it down, so the parent's stays usable).
        self._idle = []

    def close(self) -> None:
        """Refuse every later command (:class:`MapClosedError`) and disconnect the idle
        connections; a command in flight finishes and disconnects its own on return."""
        self._closed = True
        self._disconnect_idle()

    def _disconnect_idle(self) -> None:
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            conn.disconnect()

    def _checkout(self) -> Any:
        """A connection for one command: an idle one, else a new one."""
        if self._closed:
            raise MapClosedError("this RedisMap handle is closed (the data stays on the server)")
        try:
            return self._idle.pop()
        except IndexError:
            return self.new_connection()

    def _checkin(self, conn: Any) -> None:
        self._idle.append(conn)
        # close() sets the flag before it empties the list: either it sees this
        # connection, or this check sees the flag. Nothing is left connected.
        if self._closed:
            self._disconnect_idle()

    # ------------------------------------------------------------------ round trips

    def _round_trip(self, packed: list[bytes], replies: int) -> list[Any]:
        """Send ``packed`` (``replies`` commands) and read every reply: one round trip.
        An error reply is returned in place (a ``ResponseError``), not raised, so the
        connection stays in step; any other failure drops the connection and raises."""
        conn = self._checkout()
        try:
            conn.send_packed_command(packed, check_health=False)
            out: list[Any] = []
            for _ in range(replies):
                try:
                    out.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    out.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        self._checkin(conn)
        return out

    def _once(self, args: Sequence[Any]) -> Any:
        conn = self._checkout()
        try:
            packed = conn.pack_command(*args) if _hiredis_pack is None else [hiredis_packed(args)]
            conn.send_packed_command(packed, check_health=False)
            reply = conn.read_response()
        except redis.exceptions.ResponseError:
            self._checkin(conn)  # a whole error reply was read: the connection is fine
            raise
        except BaseException:
            conn.disconnect()
            raise
        self._checkin(conn)
        return reply

    def _script_once(self, script: Script, keys: Sequence[Any], args: Iterable[Any]) -> Any:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return self._once(command)
        except redis.exceptions.NoScriptError:
            # Not run (the server lacked it), so sending it again is safe for a write too.
            packed = self._packer.pack_commands([("SCRIPT", "LOAD", script.source), command])
            loaded, reply = self._round_trip(packed, 2)
            for result in (loaded, reply):
                if isinstance(result, redis.exceptions.ResponseError):
                    raise result from None
            return reply

    # -------------------------------------------------------------- error policy

    def _scrub(self, text: str) -> str:
        password = self.connection_kwargs.get("password")
        if password:
            text = text.replace(str(password), "***")
        return text

    def connection_error(self, exc: BaseException) -> RedisConnectionError:
        """The error to raise for ``exc``: names the endpoint, never its credentials."""
        reason = self._scrub(str(exc)) or type(exc).__name__
        if isinstance(exc, redis.exceptions.AuthenticationError):
            return RedisConnectionError(f"Redis at {self.place} refused the credentials: {reason}")
        if isinstance(exc, redis.exceptions.TimeoutError):
            return RedisConnectionError(f"Redis at {self.place} timed out: {reason}")
        return RedisConnectionError(f"cannot reach Redis at {self.place}: {reason}")

    def call(self, *args: Any) -> Any:
        """Run one command (a write, or anything not idempotent) in one round trip: never
        retried."""
        try:
            return self._once(args)
        except _CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None

    def read(self, *args: Any) -> Any:
        """Run one idempotent read in one round trip, retrying it on a lost connection (on
        a fresh connection each time) up to ``read_retries`` times before raising."""
        attempt = 0
        while True:
            try:
                return self._once(args)
            except _CONNECTION_ERRORS as exc:
                if attempt >= self.read_retries:
                    raise self.connection_error(exc) from None
            attempt += 1
            time.sleep(0.05 * attempt)

    def script(
        self, script: Script, keys: Sequence[Any], args: Iterable[Any], *, idempotent: bool = False
    ) -> Any:
        """Run ``script`` in one round trip (EVALSHA). Only a read-only script
        (``idempotent``) is retried on a lost connection."""
        attempt = 0
        args = list(args)
        while True:
            try:
                return self._script_once(script, keys, args)
            except _CONNECTION_ERRORS as exc:
                if not idempotent or attempt >= self.read_retries:
                    raise self.connection_error(exc) from None
            attempt += 1
            time.sleep(0.05 * attempt)

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` in one round trip (not atomically: use a script for that);
        never retried. Error replies are returned in place."""
        try:
            return self._round_trip(self._packer.pack_commands(commands), len(commands))
        except _CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None
