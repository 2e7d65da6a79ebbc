"""Connecting to Redis, and turning redis-py's failures into this package's errors.

Invariants:
- The clients built here never retry a command on their own (redis-py retries by default,
  which could apply a write twice); :func:`Endpoint.read` retries idempotent reads only.
- No message built here contains a password or a URL: an endpoint is named by host:port.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import RedisConnectionError

__all__ = ["DEFAULT_URL", "Endpoint"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")

_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Endpoint:
    """One server as seen by one map: a client that never retries by itself, the place's
    name for messages, and the policy for retrying idempotent reads."""

    __slots__ = ("client", "connection_kwargs", "place", "read_retries")

    def __init__(
        self,
        url: str | None,
        client: Any,
        *,
        timeout: float | None,
        connect_timeout: float | None,
        read_retries: int,
    ) -> None:
        no_retry = Retry(NoBackoff(), 0)
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
            retry=no_retry,
            retry_on_error=[],
            decode_responses=False,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
        )
        kwargs.pop("retry_on_timeout", None)
        self.connection_kwargs = kwargs
        pool = redis.ConnectionPool(connection_class=connection_class, **kwargs)
        self.client: Any = redis.Redis(connection_pool=pool)  # untyped use: bytes replies
        path = kwargs.get("path")
        self.place = f"unix socket {path}" if path else f"{kwargs.get('host')}:{kwargs.get('port')}"
        self.read_retries = read_retries

    def _scrub(self, text: str) -> str:
        password = self.connection_kwargs.get("password")
        if password:
            text = text.replace(str(password), "***")
        return text

    def connection_error(self, exc: BaseException) -> RedisConnectionError:
        """The error to raise for ``exc``: names the endpoint, never its credentials."""
        reason = self._scrub(str(exc)) or type(exc).__name__
        if isinstance(exc, redis.exceptions.TimeoutError):
            return RedisConnectionError(f"Redis at {self.place} timed out: {reason}")
        return RedisConnectionError(f"cannot reach Redis at {self.place}: {reason}")

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Translate connection failures inside the block into RedisConnectionError."""
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise RedisConnectionError(
                f"Redis at {self.place} refused the credentials: {self._scrub(str(exc))}"
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None

    def call(self, fn: Callable[[], T]) -> T:
        """Run a write (or any non-idempotent command) once: never retried."""
        with self.errors():
            return fn()

    def read(self, fn: Callable[[], T]) -> T:
        """Run an idempotent read, retrying it on a lost connection (a fresh connection is
        taken each time) up to ``read_retries`` times before raising."""
        attempt = 0
        while True:
            try:
                with self.errors():
                    return fn()
            except RedisConnectionError:
                if attempt >= self.read_retries:
                    raise
                attempt += 1
                time.sleep(0.05 * attempt)

    def close(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()
