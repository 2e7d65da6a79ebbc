"""Faults against a private server: refused, paused (SIGSTOP), killed and restarted."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from redis_support import RedisServer

from safemap.redis import RedisConnectionError, RedisMap

pytestmark = pytest.mark.timeout(60)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


def test_refused_connection_fails_fast_naming_host_and_port() -> None:
    port = _closed_port()
    with pytest.raises(RedisConnectionError, match=f"127.0.0.1:{port}") as info:
        RedisMap({"a": 1}, url=f"redis://:pw-not-shown@127.0.0.1:{port}/0")
    assert isinstance(info.value, ConnectionError)
    assert "pw-not-shown" not in str(info.value)


def test_paused_server_times_out_and_recovers(private_server: RedisServer) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 1}, url=private_server.url, timeout=0.3)
    private_server.pause()
    try:
        with pytest.raises(RedisConnectionError, match="timed out"):
            m["a"]
        with pytest.raises(RedisConnectionError):
            m.transaction(lambda v: v.update(a=2, b=2))
    finally:
        private_server.resume()
    # The transaction's commit either landed whole or not at all.
    assert dict(m.snapshot()) in ({"a": 1}, {"a": 2, "b": 2})
    m["c"] = 3
    assert m["c"] == 3


def test_killed_server_mid_operation_raises_and_restart_reconnects(
    private_server: RedisServer,
) -> None:
    m: RedisMap[str, Any] = RedisMap({"a": 0}, url=private_server.url, timeout=2.0)
    entered, release = threading.Event(), threading.Event()

    def slow(_key: str, old: int) -> int:
        entered.set()
        release.wait(10)
        return old + 1

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            m.compute("a", slow)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert entered.wait(10)
    private_server.kill()
    release.set()
    worker.join(20)
    assert len(outcome) == 1 and isinstance(outcome[0], RedisConnectionError)
    with pytest.raises(RedisConnectionError):
        m["a"]
    private_server.start()  # same port, empty (no persistence): scripts must reload
    m["a"] = 41
    assert m.merge("a", 1, lambda x, y: x + y) == 42
    assert m.compare_and_swap("a", 42, 43)
    assert m.load_or_store("b", 1) == (1, False)
