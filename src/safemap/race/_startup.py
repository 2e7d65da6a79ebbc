"""Start-up hook: enable the race detector at interpreter start-up when ``SAFEMAP_RACE``
is set (as coverage.py's ``process_startup`` does for subprocesses).

``safemap_race_startup.pth`` (installed into site-packages) runs one line at start-up::

    import os; os.environ.get("SAFEMAP_RACE") and __import__(...).start()

so without the variable nothing is imported. With it, :func:`start` enables the detector
before the user's code imports anything and creates its locks. Bad options do not stop the
interpreter: as ThreadSanitizer does with an unknown flag, each bad option is reported on
stderr and ignored, and the detector runs with the others.
"""

from __future__ import annotations

import os
import sys

from ._options import ENV_VAR, Options, OptionsError, parse_options

__all__ = ["lenient_options", "start"]

_started = False


def lenient_options(text: str) -> tuple[Options | None, list[str]]:
    """Parse ``SAFEMAP_RACE`` keeping the valid options: ``(options or None if off,
    error messages for the options ignored)``."""
    try:
        return parse_options(text), []
    except OptionsError:
        pass
    opts = Options()
    errors = []
    for token in text.split():
        try:
            parsed = parse_options(token, opts)
        except OptionsError as exc:
            errors.append(str(exc))
            continue
        if parsed is not None:
            opts = parsed
    return opts, errors


def start() -> None:
    """Enable the detector if ``SAFEMAP_RACE`` asks for it. Never raises: a start-up hook
    must not stop the interpreter."""
    global _started
    if _started:
        return
    _started = True
    try:
        text = os.environ.get(ENV_VAR, "")
        opts, errors = lenient_options(text)
        for message in errors:
            sys.stderr.write(f"safemap.race: ignoring bad option: {message}\n")
        if opts is None:
            return
        from safemap import race

        race._enable_from_env(opts)
    except Exception as exc:  # pragma: no cover - defensive
        sys.stderr.write(f"safemap.race: start-up hook failed: {type(exc).__name__}: {exc}\n")
