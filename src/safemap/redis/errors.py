"""The errors a :class:`~safemap.redis.RedisMap` raises beyond the protocol's own.

None of them ever carries a password or a full URL: a connection is named by host and port.
"""

from __future__ import annotations

__all__ = [
    "RedisConflictError",
    "RedisConnectionError",
    "RedisDecodeError",
    "SignatureError",
]


class RedisConnectionError(ConnectionError):
    """The server could not be reached, or the connection was lost during a call.

    A refused connection raises at once. When the connection is lost mid-call, a compound
    operation (anything run as one script, a compute or a transaction) was either wholly
    applied or not at all; which one cannot be known from the client, so re-read before
    retrying a non-idempotent write.
    """


class RedisConflictError(RuntimeError):
    """A compute-family call or a transaction kept conflicting with concurrent writers and
    gave up after its retry budget. Nothing it computed was applied. ``keys`` names the keys
    whose values kept changing under it."""

    def __init__(self, message: str, keys: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


class RedisDecodeError(ValueError):
    """A stored value (or field) could not be decoded by the map's codec: it was written by
    another program, corrupted, or written with another codec or secret. Decoding never runs
    code, so such data is refused rather than executed. ``map_name`` and ``field`` name it."""

    def __init__(self, message: str, map_name: str = "", field: bytes = b"") -> None:
        super().__init__(message)
        self.map_name = map_name
        self.field = field


class SignatureError(RedisDecodeError):
    """Data read by a signing codec had no signature or a signature that does not match its
    secret: it was refused before being unpickled."""
