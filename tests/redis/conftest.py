"""Fixtures of the RedisMap tests: the session server (from tests/conftest.py), a raw client
for planting data, and a private server per test for the fault cases (pause, kill, restart)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support.redis_server import (  # loaded by tests/conftest.py
    ENABLED,
    MISSING_MESSAGE,
    RedisServer,
    find_binary,
)

from safemap.redis import RedisMap


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def raw(url: str) -> Iterator[Any]:
    """A plain redis-py client on the test server, to plant or inspect bytes."""
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def rmap(url: str) -> Iterator[RedisMap[Any, Any]]:
    m: RedisMap[Any, Any] = RedisMap(url=url)
    yield m
    m.close()


@pytest.fixture
def private_server() -> Iterator[RedisServer]:
    """A server of this test's own, so pausing or killing it disturbs no other test."""
    if not ENABLED:
        pytest.skip("SAFEMAP_TEST_REDIS=0: the RedisMap tests are left out")
    binary = find_binary()
    if binary is None:
        pytest.fail(MISSING_MESSAGE)
    server = RedisServer(binary)
    yield server
    server.stop()
