"""Options of the race detector, in Go's ``GORACE`` style, and where reports are written.

``SAFEMAP_RACE`` holds space-separated ``name=value`` pairs, exactly like ``GORACE``::

    SAFEMAP_RACE="halt_on_error=1 history_size=3 log_path=/tmp/race exitcode=66"

A lone truthy value (``1``, ``true``, ``yes``, ``on``) means "enabled with the defaults";
an empty value or ``0``/``false``/``no``/``off`` means "not enabled". Options:

============================  =========  ==================================================
option                        default    effect
============================  =========  ==================================================
``log_path``                  stderr     reports go to ``<log_path>.<pid>``; ``stdout`` and
                                         ``stderr`` name those streams
``exitcode``                  66         exit status of a process that saw races
``strip_path_prefix``         ``""``     removed from the front of every file path printed
``history_size``              1          per-thread history of ``32768 * 2**history_size``
                                         access stacks (0..7)
``halt_on_error``             0          print the first race and exit at once
``atexit_sleep_ms``           1000       accepted for GORACE compatibility; ignored
============================  =========  ==================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import IO, Any

__all__ = ["ENV_VAR", "Options", "OptionsError", "Sink", "parse_env", "parse_options"]

ENV_VAR = "SAFEMAP_RACE"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class OptionsError(ValueError):
    """A malformed ``SAFEMAP_RACE`` value or an unknown/invalid option."""


@dataclasses.dataclass(frozen=True)
class Options:
    """The detector's options (immutable; :meth:`replace` makes a changed copy)."""

    log_path: str = "stderr"
    exitcode: int = 66
    strip_path_prefix: str = ""
    history_size: int = 1
    halt_on_error: bool = False
    atexit_sleep_ms: int = 1000

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` applied; values may be given as strings (as in the
        environment variable) or as Python values. Raises :class:`OptionsError`."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            field = fields.get(name)
            if field is None:
                raise OptionsError(
                    f"unknown race detector option {name!r} (valid: {', '.join(sorted(fields))})"
                )
            clean[name] = _convert(name, field.type, value)
        return dataclasses.replace(self, **clean)


def _convert(name: str, type_name: Any, value: Any) -> Any:
    if type_name in ("bool", bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE - {""}:
            return False
        raise OptionsError(f"race detector option {name}={value!r}: expected 0 or 1")
    if type_name in ("int", int):
        if isinstance(value, bool):
            raise OptionsError(f"race detector option {name}={value!r}: expected an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise OptionsError(
                f"race detector option {name}={value!r}: expected an integer"
            ) from None
        if name == "history_size" and not 0 <= number <= 7:
            raise OptionsError(f"race detector option history_size={number}: must be in 0..7")
        if name == "exitcode" and not 0 <= number <= 255:
            raise OptionsError(f"race detector option exitcode={number}: must be in 0..255")
        if name == "atexit_sleep_ms" and number < 0:
            raise OptionsError(f"race detector option atexit_sleep_ms={number}: must be >= 0")
        return number
    if not isinstance(value, str):
        raise OptionsError(f"race detector option {name}={value!r}: expected a string")
    if name == "log_path" and not value:
        raise OptionsError("race detector option log_path: must not be empty")
    return value


def parse_options(text: str, base: Options | None = None) -> Options | None:
    """Parse a ``SAFEMAP_RACE`` value: ``None`` if it says "not enabled", else the options
    (applied over ``base``). Raises :class:`OptionsError` naming the bad part."""
    base = base or Options()
    stripped = text.strip()
    if stripped.lower() in _FALSE:
        return None
    if stripped.lower() in _TRUE:
        return base
    changes: dict[str, str] = {}
    for token in stripped.split():
        name, sep, value = token.partition("=")
        if not sep or not name:
            raise OptionsError(
                f"{ENV_VAR}: malformed option {token!r} (expected name=value, as in GORACE)"
            )
        changes[name] = value
    try:
        return base.replace(**changes)
    except OptionsError as exc:
        raise OptionsError(f"{ENV_VAR}: {exc}") from None


def parse_env(environ: dict[str, str] | None = None) -> Options | None:
    """The options ``SAFEMAP_RACE`` asks for, or ``None`` when it is unset or off."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR)
    if value is None:
        return None
    return parse_options(value)


class Sink:
    """Where reports go: ``stderr``, ``stdout`` or the file ``<log_path>.<pid>`` (opened
    lazily, appended to, flushed after every write). Streams are looked up at each write,
    so a test that swaps ``sys.stderr`` (pytest's capture) sees the reports.

    Nothing is dropped silently: if the file cannot be opened or written, the sink says
    why on ``stderr`` (one line, once) and writes there from then on. ``redirected``
    records that a report went to a ``sys.stderr`` other than the process's own (captured),
    so the exit summary can show it again (see :func:`safemap.race._at_exit`)."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self._file: IO[str] | None = None
        self._pid = -1
        self._failed = False
        self.redirected = False

    def _stream(self) -> IO[str]:
        if self.log_path == "stderr" or self._failed:
            if sys.stderr is not sys.__stderr__:
                self.redirected = True
            return sys.stderr
        if self.log_path == "stdout":
            return sys.stdout
        pid = os.getpid()
        if self._file is None or self._pid != pid:  # a forked child writes its own file
            self._file = open(f"{self.log_path}.{pid}", "a", encoding="utf-8")  # noqa: SIM115
            self._pid = pid
        return self._file

    def write(self, text: str) -> None:
        try:
            stream = self._stream()
            stream.write(text)
            stream.flush()
            return
        except OSError as exc:
            if self._failed or self.log_path in ("stderr", "stdout"):
                return  # the standard stream itself is gone: nowhere left to say it
            self._failed = True
            target = f"{self.log_path}.{os.getpid()}"
            self._file = None
            self._fall_back(
                f"safemap.race: cannot write reports to log_path {target!r} "
                f"({exc.strerror or exc}); writing them to stderr\n" + text
            )
        except (ValueError, AttributeError):
            pass  # a closed or missing stream must not turn a report into a crash

    def _fall_back(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.write(text)
            sys.stderr.flush()

    def write_real_stderr(self, text: str) -> None:
        """Write ``text`` to the process's own stderr (``sys.__stderr__``), not to a
        replacement installed by a test runner."""
        stream = sys.__stderr__
        if stream is None or not text:
            return
        with contextlib.suppress(OSError, ValueError):
            stream.write(text)
            stream.flush()
