"""Interrupting the main thread, as Ctrl-C does, at arbitrary points of a map operation
while other threads use the same map."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

SENDS = 100
"""Signals sent per run, 2 ms apart."""


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
    trigger = _Trigger()
    previous = signal.signal(signal.SIGINT, trigger)
    try:
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
    finally:
        trigger.armed = False
        sender.join(30)
        signal.signal(signal.SIGINT, previous)
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a worker hung: a lock was left held"
    assert interrupts > 0 and sent == SENDS
    return main_done, interrupts


def interrupted_after(delay: float, call: Callable[[], object]) -> bool:
    """Run ``call()`` on the main thread while another thread sends it one SIGINT
    ``delay`` seconds in, the handler raising :class:`Interrupt` if ``call`` is still
    running. Returns whether it was interrupted. The caller must run on the main thread."""
    trigger = _Trigger()
    sender = threading.Timer(
        delay, signal.pthread_kill, (threading.main_thread().ident or 0, signal.SIGINT)
    )
    previous = signal.signal(signal.SIGINT, trigger)
    try:
        sender.start()
        try:
            trigger.armed = True
            call()
            trigger.armed = False
        except Interrupt:
            return True
        return False
    finally:
        trigger.armed = False
        sender.join(30)
        signal.signal(signal.SIGINT, previous)
