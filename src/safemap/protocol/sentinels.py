"""The sentinels of the compute family: ``MISSING`` (no entry) and ``DELETE`` (remove it).

Each is the only member of its type, so it is a singleton under ``copy``, ``deepcopy`` and
pickling with every protocol (unpickling calls the type with the member's value, as for an
enum member, and gets the one instance back), and ``old is MISSING`` is the test. Type
checkers see each type as a one-member ``enum.Enum`` (they narrow ``old is MISSING``
correctly); at run time they are small classes, because importing ``enum`` costs more than
the rest of this layer (``import safemap`` stays cheap).
"""

from __future__ import annotations

from .._typing import TYPE_CHECKING

if TYPE_CHECKING:
    import enum
    from typing import Final, Literal, TypeAlias

__all__ = ["DELETE", "MISSING", "DeleteType", "MissingType"]


if TYPE_CHECKING:

    class MissingType(enum.Enum):
        """Type of :data:`MISSING`."""

        MISSING = "MISSING"

        def __bool__(self) -> bool: ...

    class DeleteType(enum.Enum):
        """Type of :data:`DELETE`."""

        DELETE = "DELETE"

else:

    class _Sentinel:
        """A type whose one instance is stored as the class attribute named ``_value``."""

        __slots__ = ()
        _value = ""

        def __new__(cls, value):
            # What unpickling (and enum-style lookup) calls: the one member, never a new one.
            if value != cls._value:
                raise ValueError(f"{value!r} is not a valid {cls.__name__}")
            return cls.__dict__[cls._value]

        @property
        def name(self):
            return self._value

        @property
        def value(self):
            return self._value

        def __reduce__(self):
            return type(self), (self._value,)

        def __copy__(self):
            return self

        def __deepcopy__(self, memo):
            return self

        def __repr__(self):
            return f"safemap.{self._value}"

        __str__ = __repr__

    class MissingType(_Sentinel):
        """Type of :data:`MISSING`."""

        __slots__ = ()
        _value = "MISSING"

        def __bool__(self):
            # An absent entry reads as false, so ``if old:`` behaves like ``if old is not
            # MISSING`` would for truthy values; compare with ``is`` to be exact.
            return False

    class DeleteType(_Sentinel):
        """Type of :data:`DELETE`."""

        __slots__ = ()
        _value = "DELETE"

    MissingType.MISSING = object.__new__(MissingType)
    DeleteType.DELETE = object.__new__(DeleteType)


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
