"""The typing names safemap's always-imported modules use, without importing ``typing``.

``import typing`` (with the ``re``, ``contextlib`` and ``collections`` machinery it pulls in)
costs more than the rest of ``import safemap`` together, and a map library is imported at
start-up by every program that uses it. Type checkers see the real ``typing`` names (they
analyse the ``TYPE_CHECKING`` branch); at run time these stand-ins do what the modules need:

- ``TypeVar(name)`` makes a placeholder class, so ``MutableMapping[K, V]`` and ``Generic[K, V]``
  subscript and subclass as usual, and ``typing.get_type_hints`` on our methods still
  resolves (to the placeholders);
- ``Generic[...]`` is a plain base that supports ``Cls[int, str]`` (a ``types.GenericAlias``);
- ``cast`` returns its value; ``overload`` returns its function (the implementation, defined
  last, is the one that stays); ``Any`` is ``object``.

Modules that ``import safemap`` loads take these names from here, never from ``typing``
(``tests/test_import.py`` checks that ``typing`` stays unloaded).
"""

TYPE_CHECKING = False  # mypy and pyright treat a module constant of this name as true

if TYPE_CHECKING:
    from typing import Any as Any
    from typing import Generic as Generic
    from typing import NoReturn as NoReturn
    from typing import TypeVar as TypeVar
    from typing import cast as cast
    from typing import overload as overload
else:
    import sys
    import types

    Any = object
    NoReturn = object

    def TypeVar(name, *constraints, **options):
        module = sys._getframe(1).f_globals.get("__name__", __name__)
        return type(name, (), {"__module__": module, "__slots__": ()})

    class Generic:
        """Run-time stand-in for ``typing.Generic``."""

        __slots__ = ()

        def __class_getitem__(cls, params):
            return types.GenericAlias(cls, params)

    def cast(typ, value):
        return value

    def overload(func):
        return func


__all__ = ["TYPE_CHECKING", "Any", "Generic", "NoReturn", "TypeVar", "cast", "overload"]
