"""Happens-before model of ``concurrent.futures`` thread pools. Installed by
:mod:`safemap.race._sync`.

- ``ThreadPoolExecutor.submit`` forks a new logical thread for the task (the submitter's
  past → the task; the task's creation site is the ``submit`` call). The worker runs the
  task *as* that logical thread (``activate``) and publishes its end when the callable
  returns or raises (``finish``), before the future is resolved. Two tasks that a worker
  runs one after the other are therefore unordered, as if each had its own thread.
- The task's end → ``result()``/``exception()`` returning (or raising the task's own
  exception), ``wait`` for the futures it returns as done, ``as_completed`` for each future
  it yields, and each done callback (which runs as a logical thread of its own when the
  worker invokes it, or on the caller's when ``add_done_callback`` runs it at once).
- ``shutdown(wait=True)`` returning ← the end of every task the executor ran.

Applies to every ``ThreadPoolExecutor``, whenever created (its internal locks, queue and
threads stay unmodelled; ``Executor.map`` goes through ``submit`` and ``result``).
``ProcessPoolExecutor`` tasks share no memory with the caller and are not modelled, and
neither are futures that are not a thread pool's (``Future()`` made by hand).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import _base
from concurrent.futures import thread as _thread_pool
from typing import Any

from . import _runtime
from ._runtime import SyncVar
from ._sync_base import Patches

__all__ = ["install"]

_Future = _base.Future
_Executor = _thread_pool.ThreadPoolExecutor
_ORIG_SUBMIT = _Executor.submit
_ORIG_SHUTDOWN = _Executor.shutdown
_ORIG_RESULT = _Future.result
_ORIG_EXCEPTION = _Future.exception
_ORIG_ADD_DONE = _Future.add_done_callback
_ORIG_WAIT = _base.wait
_ORIG_AS_COMPLETED = _base.as_completed

_END = "_safemap_race_end"  # on a Future: the SyncVar its task's end is published into
_ALL = "_safemap_race_all"  # on an executor: every task's end, for shutdown(wait=True)
_numbers = itertools.count(1)
_adding = threading.local()  # .future: the future whose add_done_callback runs here now


def _observe(future: Any) -> None:
    end = vars(future).get(_END)
    if end is not None:
        _runtime.acquire(end)


def _submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``submit``: fork the task's logical thread here; run the task as it."""
    prefix = getattr(self, "_thread_name_prefix", "") or "ThreadPoolExecutor"
    child = _runtime.fork(f"{prefix} task {next(_numbers)}", _runtime.capture_stack(0))
    end = SyncVar()
    everything = vars(self).setdefault(_ALL, SyncVar())

    def task(*task_args: Any, **task_kwargs: Any) -> Any:
        with _runtime.activate(child):
            try:
                return fn(*task_args, **task_kwargs)
            finally:
                _runtime.finish(child, end)
                _runtime.release_merge(everything)

    future = _ORIG_SUBMIT(self, task, *args, **kwargs)
    vars(future)[_END] = end
    return future


def _shutdown(self: Any, wait: bool = True, *, cancel_futures: bool = False) -> None:
    _ORIG_SHUTDOWN(self, wait, cancel_futures=cancel_futures)
    everything = vars(self).get(_ALL)
    if wait and everything is not None:
        _runtime.acquire(everything)


def _result(self: Any, timeout: float | None = None) -> Any:
    try:
        value = _ORIG_RESULT(self, timeout)
    except BaseException as exc:
        if exc is getattr(self, "_exception", None):  # the task's own exception
            _observe(self)
        raise
    _observe(self)
    return value


def _exception(self: Any, timeout: float | None = None) -> Any:
    exc = _ORIG_EXCEPTION(self, timeout)
    _observe(self)
    return exc


def _add_done_callback(self: Any, fn: Callable[[Any], object]) -> None:
    def callback(future: Any) -> object:
        if getattr(_adding, "future", None) is future:
            _observe(future)  # run at once, on the thread that added it
            return fn(future)
        state = _runtime.fork("done callback", None)
        with _runtime.activate(state):
            _observe(future)
            return fn(future)

    previous = getattr(_adding, "future", None)
    _adding.future = self
    try:
        _ORIG_ADD_DONE(self, callback)
    finally:
        _adding.future = previous


def _wait(fs: Any, timeout: float | None = None, return_when: str = _base.ALL_COMPLETED) -> Any:
    result = _ORIG_WAIT(fs, timeout, return_when)
    for future in result.done:
        _observe(future)
    return result


def _as_completed(fs: Any, timeout: float | None = None) -> Iterator[Any]:
    for future in _ORIG_AS_COMPLETED(fs, timeout):
        _observe(future)
        yield future


_wait.__doc__ = _ORIG_WAIT.__doc__
_as_completed.__doc__ = _ORIG_AS_COMPLETED.__doc__


def install(patches: Patches) -> None:
    """Patch ``ThreadPoolExecutor``, ``Future`` and the module functions (recorded in
    ``patches``)."""
    patches.set(_Executor, "submit", _submit)
    patches.set(_Executor, "shutdown", _shutdown)
    patches.set(_Future, "result", _result)
    patches.set(_Future, "exception", _exception)
    patches.set(_Future, "add_done_callback", _add_done_callback)
    for module in (futures, _base):
        patches.set(module, "wait", _wait)
        patches.set(module, "as_completed", _as_completed)
