"""CPython's own mapping conformance suite, ``test.mapping_tests.TestHashMappingProtocol``,
run with ``type2test`` set to each registered map type.

The contract (``docs/protocol.md``) says it passes for every mutable type except its
``test_repr``, which expects ``dict``'s repr (``{...}``) where the maps print
``TypeName({...})``.
"""

from __future__ import annotations

import unittest
from typing import Any

import pytest

import safemap
from safemap.actor import ThreadsafeView

mapping_tests = pytest.importorskip(
    "test.mapping_tests",
    reason="CPython's test package (test.mapping_tests) is not installed with this Python",
)

# Not bound to a module-level name: pytest would collect the unparametrized base class.
TEST_NAMES = sorted(unittest.TestLoader().getTestCaseNames(mapping_tests.TestHashMappingProtocol))

SKIPPED = {
    "test_repr": "the spec's repr is TypeName({...}); test_repr expects dict's {...}",
}


def _nests_too_deep_for_owned_maps(map_type: type, name: str) -> bool:
    # From CPython 3.14, test_repr_deep nests support.exceeds_recursion_limit() maps
    # (150,000); every ActorMap owns a thread and every AsyncActorMap an owner task.
    from test import support

    depth = getattr(support, "exceeds_recursion_limit", lambda: 0)()
    owned = issubclass(map_type, (safemap.ActorMap, ThreadsafeView))
    return name == "test_repr_deep" and owned and depth > 10_000


def test_suite_found() -> None:
    assert len(TEST_NAMES) > 20, TEST_NAMES


@pytest.mark.parametrize("name", TEST_NAMES)
def test_hash_mapping_protocol(map_type: type, name: str) -> None:
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    if _nests_too_deep_for_owned_maps(map_type, name):
        pytest.skip(
            "this Python's test_repr_deep nests 150,000 maps: one owner thread (ActorMap) or "
            "task (AsyncActorMap) each (on 3.11-3.13 it nests about 1,100 and runs)"
        )
    case_class: Any = type(
        f"TestHashMappingProtocol_{map_type.__name__}",
        (mapping_tests.TestHashMappingProtocol,),
        {"type2test": map_type},
    )
    case_class(name).debug()  # runs setUp/test/tearDown and raises on failure
