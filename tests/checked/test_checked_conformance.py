"""CPython's own mapping conformance suites run against ``CheckedDict``: it must behave
exactly as ``dict`` does (including ``repr``, so no test is skipped)."""

from __future__ import annotations

import unittest
from typing import Any

import pytest

from safemap.failfast import CheckedDict

mapping_tests = pytest.importorskip(
    "test.mapping_tests",
    reason="CPython's test package (test.mapping_tests) is not installed with this Python",
)

SUITES = ["BasicTestMappingProtocol", "TestMappingProtocol", "TestHashMappingProtocol"]
CASES = [
    (suite, name)
    for suite in SUITES
    for name in sorted(unittest.TestLoader().getTestCaseNames(getattr(mapping_tests, suite)))
]


def test_suites_found() -> None:
    assert len(CASES) > 40, CASES


@pytest.mark.parametrize(("suite", "name"), CASES)
def test_mapping_protocol(suite: str, name: str) -> None:
    case_class: Any = type(
        f"{suite}_CheckedDict", (getattr(mapping_tests, suite),), {"type2test": CheckedDict}
    )
    case_class(name).debug()
