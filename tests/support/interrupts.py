"""Interrupting the main thread, as Ctrl-C does, at arbitrary points of a map operation
while other threads use the same map."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

SENDS = 100
"""Signals sent per run, 2 ms apart."""

needs_main_thread_signals = pytest.mark.skipif(
    sys.platform == "win32" or threading.current_thread() is not threading.main_thread(),
    reason="needs POSIX signals delivered to the main thread",
)
"""For the tests that use this module: the collection runs on the thread that runs them."""


class Interrupt(BaseException):
    """Raised asynchronously by the SIGINT handler below, exactly as the default handler
    raises KeyboardInterrupt (a separate class, so one that escaped could not abort pytest)."""


class _Trigger:
    """Raises one :class:`Interrupt` per arming: armed only inside ``try``, so the
    exception is raised asynchronously anywhere in a map operation, never outside."""

    armed = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            raise Interrupt


@contextmanager
def _raising_on_sigint(sender: threading.Thread) -> Iterator[_Trigger]:
    """SIGINT raises :class:`Interrupt` through the returned trigger (when armed) until
    ``sender``, the thread sending the signals, has ended; the handler before is then
    put back (so no late signal reaches it)."""
    trigger = _Trigger()
    previous = signal.signal(signal.SIGINT, trigger)
    try:
        yield trigger
    finally:
        trigger.armed = False
        sender.join(30)
        signal.signal(signal.SIGINT, previous)


def interrupted_while_contending(
    main_op: Callable[[], object], worker_op: Callable[[], object], workers: int, per_worker: int
) -> tuple[int, int]:
    """Run ``worker_op`` ``per_worker`` times on each of ``workers`` threads while the main
    thread runs ``main_op`` over and over, a SIGINT handler raising :class:`Interrupt` in
    it, :data:`SENDS` times. Returns (main calls completed, calls interrupted), after
    asserting that every worker finished (an interrupt left no lock held) and that at
    least one call was interrupted. The caller must run on the main thread."""
    sent = 0
    main_done = interrupts = 0

    def interrupter() -> None:
        nonlocal sent
        for _ in range(SENDS):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            sent += 1
            time.sleep(0.002)

    def work() -> None:
        for _ in range(per_worker):
            worker_op()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    sender = threading.Thread(target=interrupter, daemon=True)
    with _raising_on_sigint(sender) as trigger:
        for t in [*threads, sender]:
            t.start()
        while sender.is_alive() or any(t.is_alive() for t in threads):
            try:
                trigger.armed = True
                main_op()
                main_done += 1
                trigger.armed = False
            except Interrupt:
                interrupts += 1
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a worker hung: a lock was left held"
    assert interrupts > 0 and sent == SENDS
    return main_done, interrupts


def interrupted_after(delay: float, call: Callable[[], object]) -> bool:
    """Run ``call()`` on the main thread while another thread sends it one SIGINT
    ``delay`` seconds in, the handler raising :class:`Interrupt` if ``call`` is still
    running. Returns whether it was interrupted. The caller must run on the main thread."""
    sender = threading.Timer(
        delay, signal.pthread_kill, (threading.main_thread().ident or 0, signal.SIGINT)
    )
    with _raising_on_sigint(sender) as trigger:
        sender.start()
        try:
            trigger.armed = True
            call()
            trigger.armed = False
        except Interrupt:
            return True
        return False
