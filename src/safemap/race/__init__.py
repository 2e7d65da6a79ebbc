"""``safemap.race``: a happens-before data race detector for Python maps (Go's ``-race``
for dicts).

::

    from safemap import race
    race.enable()                          # or SAFEMAP_RACE=1 in the environment
    cache = race.watch({}, name="cache")   # a watched dict (use the returned object)
    ...
    race.reports()                         # list[race.RaceReport]; race.clear() forgets them
    with race.detect() as session:         # enable for a block; session.reports afterwards
        ...

**What is recorded.** A watched map has one location per key and one for its *shape* (its
key set). Every operation on it is a set of accesses:

==================================================  =======================================
operation                                           accesses
==================================================  =======================================
``d[k]``, ``d.get(k)``, ``k in d``                  plain read of key k (also when absent)
``d[k] = v``, ``del d[k]``, ``update`` (per key)    plain write of key k; plus a shape
                                                    change when a key appears or disappears
``setdefault``, ``pop``, ``popitem``                atomic operation on the key; plus a
                                                    shape change when a key appears or
                                                    disappears
iteration over ``d``, ``keys()``, ``values()``,     shape observation for the whole span of
``items()``, ``reversed``                           the iteration (first ``next()`` to
                                                    the last one), and a plain read
                                                    of each key yielded
``len(d)``, ``copy()``, ``==``, ``repr``            shape observation, and (for those that
                                                    read values) a read of every key
``clear()``                                         a write of every key and a shape change
==================================================  =======================================

Two accesses from different threads that are not ordered by happens-before conflict when
they touch the same location and are: read/write or write/write on a key; atomic/write or
atomic/read on a key (atomic/atomic does not); observation/change on the shape
(change/change does not). Different keys never conflict. ``dict(d)`` and ``{**d}`` go
through ``keys()``, so they are recorded as an iteration span plus reads.

**Guarantees.**

- No report for accesses ordered by the synchronization the detector models (the list
  in ``docs/race.md``, "Happens-before": ``threading``, ``queue``, ``concurrent.futures``,
  safemap's maps and ``RWLock``), from the moment it is enabled. A lock created before
  :func:`enable` creates no edges.
- Every conflicting unordered pair that executed is reported (FastTrack precision: for
  each location at least the first race with each live access; after a race on a location
  has been reported, later pairs on it are best effort) unless the previous access's stack
  has left its thread's history (``history_size``), in which case the report says
  ``[failed to restore the stack]``.
- Reports are deduplicated by the unordered pair of the two access sites (innermost
  frames), within the scope of :func:`clear` (for :func:`reports`) and of one
  :func:`detect` session (for ``session.reports``).
- Memory stays bounded: per map, shadow for present keys plus fewer than
  ``2 * ABSENT_MAX`` (8192) absent keys; per location at most ``MAX_RECORDS`` threads; per thread a
  history of ``32768 * 2**history_size`` stacks (shared when equal).
- A watched map is as safe as the map it wraps, enabled or not: each operation is the one
  call of the flavor the unwatched map would make (see ``_watched``).
- Disabled (the default), a watched map still runs its Python-level methods: about 3-6x
  a ``dict`` operation (``benchmarks/bench_race.py``), iteration at ``dict`` speed.

**Process exit.** When the detector was enabled from ``SAFEMAP_RACE`` (the start-up hook
does this at interpreter start-up), a process that saw races prints ``Found N data
race(s)`` at exit and exits with ``exitcode`` (default 66) **whatever status it would have
exited with** (``sys.exit(n)``, ``raise SystemExit(n)``, an uncaught exception alike), as
ThreadSanitizer does; ``exitcode=0`` keeps the program's own status. N counts the races
reported and not forgotten with :func:`clear` (a program or test that provokes races on
purpose and checks them clears them). Python fixes the exit status before ``atexit``
handlers run, so this is done by the last ``atexit`` handler (registered first, at
start-up), which flushes every open file and then calls ``os._exit``: all other ``atexit``
handlers and thread joins have run by then. A report that was written while ``stderr`` was
redirected (pytest's capture, without safemap's plugin) is written again to the real
``stderr`` before ``Found N``, so the exit status is always explained. Under safemap's
pytest plugin the plugin prints the summary (once, also for pytest-xdist workers) and the
exit status follows the same rule.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _shadow
from ._options import ENV_VAR, Options, OptionsError, parse_env
from ._report import KINDS, Access, Frame, RaceReport
from ._shadow import Session
from ._watched import is_watched
from ._watched import watch as _watch

__all__ = [
    "ENV_VAR",
    "KINDS",
    "Access",
    "Frame",
    "Options",
    "OptionsError",
    "RaceReport",
    "Session",
    "clear",
    "configure",
    "detect",
    "disable",
    "enable",
    "enabled",
    "is_watched",
    "options",
    "reports",
    "watch",
]


_env_applied = False


def enable(**options: Any) -> None:
    """Start detecting (idempotent). ``options`` are GORACE-style options (see
    :class:`Options`: ``log_path``, ``exitcode``, ``strip_path_prefix``, ``history_size``,
    ``halt_on_error``, ``atexit_sleep_ms``), applied over the current ones; an unknown or
    invalid option raises :class:`OptionsError` and leaves the detector as it was. The
    first call starts from the options in ``SAFEMAP_RACE``, if it is set.

    From now on, watched maps record their accesses and synchronization objects created
    from now on are modelled. Re-enabling after :func:`disable` forgets the shadow state
    of the earlier period (the synchronization in between was not seen)."""
    global _env_applied
    if not _env_applied:
        # The first enable() starts from the SAFEMAP_RACE options, if any (a test run
        # where the start-up hook is not installed still honours them).
        _env_applied = True
        env = parse_env()
        if env is not None:
            _shadow.set_options(env.replace(**options))
            options = {}
    if options:
        configure(**options)
    if _shadow.on:
        return
    from . import _sync

    _sync.install()
    _shadow.set_enabled(True)


def disable() -> None:
    """Stop detecting (idempotent): watched maps go back to plain operations and the
    synchronization instrumentation is removed. Reports are kept."""
    if not _shadow.on:
        return
    _shadow.set_enabled(False)
    from . import _sync

    _sync.uninstall()


def enabled() -> bool:
    """Whether the detector is recording."""
    return _shadow.on


def configure(**options: Any) -> Options:
    """Change options without enabling; returns the options now in force. Raises
    :class:`OptionsError` for an unknown or invalid option (nothing is changed then)."""
    new = _shadow.options.replace(**options)
    _shadow.set_options(new)
    return new


def options() -> Options:
    """The options in force."""
    return _shadow.options


def watch(mapping: Any = None, /, *, name: str | None = None) -> Any:
    """A watched map: a subclass of ``mapping``'s type (``dict``, ``defaultdict``,
    ``OrderedDict``, ``Counter``, any dict subclass) holding its contents, whose every
    operation is recorded while the detector is enabled. ``mapping=None`` gives an empty
    watched ``dict``; a non-dict mapping gives a watched ``dict`` of its items; a watched
    map is returned as is (renamed if ``name`` is given).

    A dict cannot change its class in place, so **use the returned object**: the original
    ``mapping`` is copied, not watched. ``isinstance(w, type(mapping))`` holds, a watched
    ``defaultdict`` calls its ``default_factory`` on a miss, a watched ``OrderedDict``
    keeps ``move_to_end`` and ``popitem(last=)``. ``copy()``, ``copy.copy``,
    ``copy.deepcopy`` and pickling give a plain, unwatched map of the same flavor.
    ``name`` is how reports name the map (default: ``<type>@<id>``)."""
    return _watch(mapping, name)


def reports() -> list[RaceReport]:
    """The races reported since the last :func:`clear` (a copy, oldest first)."""
    with _shadow._lock:
        return list(_shadow.reports)


def clear() -> None:
    """Forget the reports (and which access-site pairs were already reported). Forgotten
    races no longer count in the ``Found N data race(s)`` summary and exit status."""
    _shadow.clear_reports()


def _forget(forgotten: list[RaceReport]) -> None:
    """Drop ``forgotten`` from :func:`reports` (races a test expected and checked)."""
    with _shadow._lock:
        ids = {id(r) for r in forgotten}
        _shadow.reports[:] = [r for r in _shadow.reports if id(r) not in ids]


@contextmanager
def detect(**options: Any) -> Iterator[Session]:
    """Enable the detector for the block (with ``options``, restored afterwards) and
    collect the races found meanwhile in ``session.reports`` (deduplicated within the
    session, independently of :func:`clear` and earlier sessions). If the detector was
    disabled before the block, it is disabled again after it."""
    was_on = _shadow.on
    old = _shadow.options
    session = Session()
    if options:
        configure(**options)
    with _shadow._lock:
        _shadow.sessions.append(session)
    try:
        enable()
        yield session
    finally:
        with _shadow._lock:
            _shadow.sessions.remove(session)
        session.active = False
        if not was_on:
            disable()
        if options:
            _shadow.set_options(old)


# ------------------------------------------------------------------------ process exit

_exit_armed = False
#: Set by the pytest plugin: it printed ``Found N data race(s)`` (with the races of its
#: xdist workers) and showed every report with its test.
_summary_printed = False
#: Races reported by other processes on this one's behalf (pytest-xdist workers).
_races_elsewhere = 0
#: Set in a pytest-xdist worker: its races are counted by the controller process.
_exit_delegated = False


def _enable_from_env(opts: Options) -> None:
    """What ``SAFEMAP_RACE`` asks for: enable with ``opts`` and arm the exit status."""
    global _env_applied
    _env_applied = True
    _arm_exit()
    _shadow.set_options(opts)
    enable()


def enable_from_env() -> bool:
    """Enable the detector if ``SAFEMAP_RACE`` asks for it (as the start-up hook does);
    returns whether it did. Raises :class:`OptionsError` for a malformed value."""
    opts = parse_env()
    if opts is None:
        return False
    _enable_from_env(opts)
    return True


def _arm_exit() -> None:
    """Make the process report ``Found N data race(s)`` and exit with ``exitcode`` if it
    saw races. ``atexit`` runs handlers last-registered-first, so arming this first (at
    start-up) makes it the last handler."""
    global _exit_armed
    if _exit_armed:
        return
    _exit_armed = True
    atexit.register(_at_exit)


def _race_count() -> int:
    """The races that count at exit: reported here and not cleared, plus elsewhere."""
    with _shadow._lock:
        return len(_shadow.reports) + _races_elsewhere


def _at_exit() -> None:
    if _exit_delegated:
        return
    count = _race_count()
    if not count:
        return
    if not _summary_printed:
        if _shadow.sink.redirected:
            # The reports went to a stream someone else collected (and maybe dropped).
            _shadow.sink.write_real_stderr("".join(str(r) for r in reports()))
        _shadow.sink.write(f"Found {count} data race(s)\n")
    code = _shadow.options.exitcode
    if code:
        _flush_all()
        _shadow.halt(code)


def _flush_all() -> None:
    import gc
    import io

    for obj in gc.get_objects():
        if isinstance(obj, io.IOBase):
            try:
                if not obj.closed:
                    obj.flush()
            except Exception:
                continue
