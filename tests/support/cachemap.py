"""A bounded ``safemap.Cache`` for the shared protocol suite: large enough that the
suite's maps never evict, small enough that every write runs the W-TinyLFU policy."""

from __future__ import annotations

from typing import Any

import safemap


class BoundedCache(safemap.Cache[Any, Any]):
    def __init__(self, *args: Any, maxsize: int | None = 1 << 16, **kwargs: Any) -> None:
        super().__init__(*args, maxsize=maxsize, **kwargs)
