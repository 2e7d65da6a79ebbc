"""A throwaway redis-server for the tests: 127.0.0.1 only, a free port, no persistence.

Environment:
- ``SAFEMAP_REDIS_SERVER``: the server binary (default: ``redis-server`` on PATH, then
  ``valkey-server``).
- ``SAFEMAP_TEST_REDIS=0``: leave RedisMap out of the suite (for a machine without a
  server). Otherwise a missing binary FAILS every RedisMap test with a message saying how
  to install one: CI installs ``redis-server``, so a silent skip would hide a broken setup.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ENABLED = os.environ.get("SAFEMAP_TEST_REDIS", "1").strip().lower() not in {"0", "no", "false"}

MISSING_MESSAGE = (
    "RedisMap tests need a redis-server (or valkey-server) binary and none was found: "
    "install it (Debian/Ubuntu: apt-get install -y redis-server), or point "
    "SAFEMAP_REDIS_SERVER at one, or set SAFEMAP_TEST_REDIS=0 to leave RedisMap out."
)


def find_binary() -> str | None:
    explicit = os.environ.get("SAFEMAP_REDIS_SERVER")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return shutil.which("redis-server") or shutil.which("valkey-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One server process; ``url`` reaches it. ``pause``/``resume``/``kill``/``restart``
    are the fault injections (SIGSTOP, SIGCONT, SIGKILL, a new process on the same port)."""

    def __init__(self, binary: str, *, extra: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.port = _free_port()
        self.extra = extra
        self.dir = tempfile.mkdtemp(prefix="safemap-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start (code {self.process.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 15 s")

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
