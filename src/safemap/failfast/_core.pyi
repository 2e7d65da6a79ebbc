"""Type stub of the C extension ``safemap.failfast._core`` (see docs/checked.md)."""

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

_KT = TypeVar("_KT")
_VT = TypeVar("_VT")

FREE_THREADED: int

class CheckedDict(dict[_KT, _VT]):
    @property
    def name(self) -> str | None: ...
    @property
    def confined(self) -> bool: ...

class CheckedDictIterator(Iterator[Any]):
    def __next__(self) -> Any: ...
    def __length_hint__(self) -> int: ...

def _new(mapping: Any, name: object, confined: bool, /) -> CheckedDict[Any, Any]: ...
def _restore(name: str | None, /) -> CheckedDict[Any, Any]: ...
def _iter(mapping: Any, kind: int, /) -> Any: ...
def _after_fork_child() -> None: ...
def _set_hooks(
    error_factory: Callable[[int, Any, int], BaseException],
    keys_view: type[Any],
    values_view: type[Any],
    items_view: type[Any],
    /,
) -> None: ...
