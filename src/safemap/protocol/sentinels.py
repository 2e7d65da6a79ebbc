"""The sentinels of the compute family: ``MISSING`` (no entry) and ``DELETE`` (remove it).

Both are members of one-member enums, so they are singletons under ``copy``, ``deepcopy``
and pickling with every protocol, and type checkers narrow ``old is MISSING`` correctly.
"""

from __future__ import annotations

import enum

from .._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Final, Literal, TypeAlias

__all__ = ["DELETE", "MISSING", "DeleteType", "MissingType"]


class MissingType(enum.Enum):
    """Type of :data:`MISSING`."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "safemap.MISSING"

    __str__ = __repr__

    def __bool__(self) -> bool:
        # An absent entry reads as false, so ``if old:`` behaves like ``if old is not MISSING``
        # would for truthy values; compare with ``is`` to be exact.
        return False


class DeleteType(enum.Enum):
    """Type of :data:`DELETE`."""

    DELETE = "DELETE"

    def __repr__(self) -> str:
        return "safemap.DELETE"

    __str__ = __repr__


MISSING: Final = MissingType.MISSING
"""Passed to a compute callback as the old value when the key is absent."""

DELETE: Final = DeleteType.DELETE
"""Returned by a compute-family callback to remove the entry (or to leave it absent)."""

if TYPE_CHECKING:
    Missing: TypeAlias = Literal[MissingType.MISSING]
    Delete: TypeAlias = Literal[DeleteType.DELETE]
else:  # at run time, the types whose only members they are
    Missing = MissingType
    Delete = DeleteType
