"""Type stub of the C extension ``safemap.race._fastiter`` (see ``_fastiter.c``).

``span`` makes the iterator that :func:`safemap.race._shadow.iterate` returns; ``hooks``
is ``_shadow._SPAN_HOOKS``.
"""

from collections.abc import Callable, Iterator
from typing import Any, final

Hooks = tuple[
    dict[str, Any],  # _shadow's globals ("on", "generation")
    Any,  # _runtime._local (its .state is the current logical thread)
    Callable[[], Any],  # _runtime.current
    Callable[..., None],  # _shadow._shape_slow
    Callable[..., None],  # _shadow._key_slow
    str,  # _shadow.ITER
    str,  # _shadow.READ
    Any,  # ThreadState.tid (a member descriptor: a __slots__ entry)
    Any,  # ThreadState.vc
    Any,  # MapShadow.shape
    Any,  # MapShadow.keys
]

@final
class Span(Iterator[Any]):
    def __iter__(self) -> Span: ...
    def __next__(self) -> Any: ...

def span(
    hooks: Hooks, d: dict[Any, Any], ms: Any, op: str, it: Iterator[Any], item: int, /
) -> Span: ...
