"""Type stub of the C extension ``safemap.protocol._flight``: the end of a single-flight
load (see singleflight.py)."""

from typing import Any

def land(table: dict[Any, Any], key: Any, flight: list[Any], outcome: Any, ok: bool, /) -> None: ...
def set_markers(done: object, failed: object, /) -> None: ...
