"""Faults against a private server: refused, paused (SIGSTOP), killed and restarted."""

from __future__ import annotations

import operator
import socket
import threading
from typing import Any

import pytest
from support.redis_server import RedisServer

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


class SwallowingServer:
    """A fake server on 127.0.0.1 that counts commands and answers per ``policy``: it
    stands for a server that executed a command whose reply was then lost, which is when
    resending would apply a write twice. ``policy(name, seen)`` returns the reply bytes,
    ``None`` to never answer, or ``b""`` to drop the connection without answering."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.seen: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        stream = conn.makefile("rb")
        try:
            while True:
                header = stream.readline()
                if not header:
                    return
                parts = []
                for _ in range(int(header[1:])):
                    size = int(stream.readline()[1:])
                    parts.append(stream.read(size + 2)[:-2])
                name = parts[0].decode().upper()
                self.seen.append(name)
                # HELLO refused: the client falls back to RESP2, which this fake speaks.
                reply = b"-ERR unknown command\r\n" if name == "HELLO" else None
                reply = reply or self.policy(name, self.seen)
                if reply == b"":
                    conn.close()
                    return
                if reply is not None:
                    conn.sendall(reply)
        except OSError:
            return

    def close(self) -> None:
        self._sock.close()


def _swallow_writes(name: str, _seen: list[str]) -> bytes | None:
    if name in ("HINCRBY", "HSET", "EVALSHA", "EVAL"):
        return None  # "executed", reply lost
    return b"+OK\r\n"


def test_a_write_whose_reply_is_lost_is_never_resent() -> None:
    server = SwallowingServer(_swallow_writes)
    try:
        m: RedisMap[str, int] = RedisMap(url=f"redis://127.0.0.1:{server.port}/0", timeout=0.2)
        for write in (
            lambda: m.merge("n", 1, operator.add),
            lambda: m.__setitem__("k", 1),
            lambda: m.compare_and_swap("k", 1, 2),
        ):
            before = len(server.seen)
            with pytest.raises(RedisConnectionError, match="timed out"):
                write()
            sent = [n for n in server.seen[before:] if n in ("HINCRBY", "HSET", "EVALSHA")]
            assert len(sent) == 1, server.seen[before:]  # sent once: never resent
    finally:
        server.close()


def test_an_idempotent_read_is_retried_on_a_lost_connection() -> None:
    def drop_first_read(name: str, seen: list[str]) -> bytes | None:
        if name == "HGET":
            return b"" if seen.count("HGET") == 1 else b"$1\r\n7\r\n"
        return b"+OK\r\n"

    server = SwallowingServer(drop_first_read)
    try:
        m: RedisMap[str, int] = RedisMap(url=f"redis://127.0.0.1:{server.port}/0", timeout=1)
        assert m["k"] == 7
        assert server.seen.count("HGET") == 2
    finally:
        server.close()


def test_reads_survive_a_dropped_connection(private_server: RedisServer) -> None:
    import redis

    m: RedisMap[str, int] = RedisMap({"a": 1}, url=private_server.url)
    admin = redis.Redis.from_url(private_server.url)
    admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert m["a"] == 1 and len(m) == 1 and dict(m.snapshot()) == {"a": 1}
    admin.close()


def test_server_features_are_detected_at_runtime(url: str, raw: Any) -> None:
    info = raw.info("server")
    version = tuple(int(p) for p in info["redis_version"].split(".")[:2])
    m: RedisMap[str, int] = RedisMap(url=url)
    features = m.server_features()
    if "valkey_version" not in info:  # (Valkey reports a fixed redis_version)
        assert features["field_ttl"] == (version >= (7, 4))
        assert features["hgetdel"] == (version >= (8, 0))  # else load_and_delete is a script
    m["k"] = 1
    assert m.load_and_delete("k") == (1, True) and m.load_and_delete("k") == (None, False)


def test_hgetdel_is_used_when_the_server_has_it() -> None:
    def newer_server(name: str, _seen: list[str]) -> bytes:
        if name == "COMMAND":  # COMMAND INFO HGETDEL HEXPIRE: the first is known
            return b"*2\r\n*1\r\n$7\r\nhgetdel\r\n*-1\r\n"
        if name == "HGETDEL":
            return b"*1\r\n$1\r\n7\r\n"
        return b"+OK\r\n"

    server = SwallowingServer(newer_server)
    try:
        m: RedisMap[str, int] = RedisMap(url=f"redis://127.0.0.1:{server.port}/0", timeout=1)
        assert m.server_features() == {"hgetdel": True, "field_ttl": False}
        assert m.load_and_delete("k") == (7, True)
        assert "HGETDEL" in server.seen and "EVALSHA" not in server.seen
    finally:
        server.close()


def test_a_server_refusing_command_info_means_no_newer_features() -> None:
    def acl_limited(name: str, _seen: list[str]) -> bytes:
        if name == "COMMAND":
            return b"-NOPERM this user has no permissions to run the 'command' command\r\n"
        if name == "EVALSHA":  # the load_and_delete script: {1, "7"}
            return b"*2\r\n:1\r\n$1\r\n7\r\n"
        return b"+OK\r\n"

    server = SwallowingServer(acl_limited)
    try:
        m: RedisMap[str, int] = RedisMap(url=f"redis://127.0.0.1:{server.port}/0", timeout=1)
        assert m.server_features() == {"hgetdel": False, "field_ttl": False}
        assert m.load_and_delete("k") == (7, True)
    finally:
        server.close()


# hiredis's C packer turns an int or float argument into text with repr() and does not check
# the result; repr() first runs pending signal handlers, so a handler that raised there
# (Ctrl-C) made it dereference NULL. Found by test_interrupt_signal_while_threads_contend.
_PACK_UNDER_SIGNALS = """
import signal, sys, threading, time
from safemap.redis.connection import hiredis_packed

class Stop(BaseException):
    pass

armed = False
def handler(signum, frame):
    global armed
    if armed:
        armed = False
        raise Stop

stopping = False
def sender():
    while not stopping:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.0002)

signal.signal(signal.SIGINT, handler)
threading.Thread(target=sender, daemon=True).start()
args = ("EVALSHA", b"sha", 1, b"key", 7, -(2**63), 0.5, float("inf"))
packed = interrupted = 0
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline or not interrupted:
    try:
        armed = True
        hiredis_packed(args)
        armed = False
        packed += 1
    except Stop:
        interrupted += 1
stopping = True
print(packed, interrupted)
"""


def test_an_interrupt_while_packing_a_command_is_raised_not_a_crash() -> None:
    """A raising SIGINT handler, run over and over while commands with int and float
    arguments are packed: each interrupt propagates as an exception; the process lives."""
    import subprocess
    import sys

    pytest.importorskip("hiredis")
    done = subprocess.run(
        [sys.executable, "-c", _PACK_UNDER_SIGNALS, "1.0"],
        capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    packed, interrupted = map(int, done.stdout.split())
    assert packed > 0 and interrupted > 0


def test_only_bytes_and_text_reach_the_hiredis_packer(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Every command a map sends reaches hiredis as bytes and str only, and is packed
    exactly as hiredis packs the original arguments."""
    hiredis = pytest.importorskip("hiredis")
    from safemap.redis import connection

    seen: list[tuple[Any, ...]] = []

    def spy(args: tuple[Any, ...]) -> bytes:
        seen.append(args)
        return hiredis.pack_command(args)  # type: ignore[no-any-return]

    monkeypatch.setattr(connection, "_hiredis_pack", spy)
    args = ("EVALSHA", b"sha", 1, b"k", -(2**63), 2.5, float("-inf"), memoryview(b"mv"))
    assert connection.hiredis_packed(args) == hiredis.pack_command(args)
    m: RedisMap[str, Any] = RedisMap(url=url)
    m["a"] = 1
    m.merge("a", 5, operator.add)
    assert m.load_or_store("b", 2.5) == (2.5, False)
    assert m.compare_and_swap("b", 2.5, 3)
    del m["a"]
    assert dict(m.snapshot()) == {"b": 3} and len(m) == 1
    m.clear()
    assert len(seen) > 7
    for command in seen:
        assert all(type(arg) in (bytes, str, memoryview) for arg in command), command
    with pytest.raises(TypeError):  # anything else is still refused, as hiredis refuses it
        connection.hiredis_packed(("SET", b"k", True))
