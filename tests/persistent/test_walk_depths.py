"""Lookups at every depth of the trie.

Every lookup walk (``PersistentMap``'s point reads, ``Trie`` and ``FrozenMap`` lookups, the
walk that compares without a call and the one that runs ``__eq__``) follows the first four
levels of children in an unrolled descent and the deeper ones in a loop. Int keys hash to
themselves, so ``low + (high << shift)`` shares its lowest ``shift`` bits with ``low``: keys
made that way put entries, sub-tries and collision nodes at every level from the root to the
last (shift 60), on both sides of the unrolled levels, and the probes below look up present
and absent keys there through every read path against a dict.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import FrozenMap, PersistentMap
from safemap.persistent import Trie


class Key:
    """A key of a chosen hash whose ``__eq__`` is Python code (the other walk)."""

    __slots__ = ("h", "name")

    def __init__(self, name: int, h: int) -> None:
        self.name, self.h = name, h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.name == self.name and other.h == self.h

    def __repr__(self) -> str:
        return f"Key({self.name}, {self.h})"


SHIFTS = list(range(0, 61, 5))


def deep_int(low: int, high: int, shift: int) -> int:
    # < 2**61 - 1, so hash(k) == k: k's lowest `shift` bits are low's.
    return low + (high << shift)


ints = st.builds(
    deep_int, st.integers(0, 3), st.integers(1, 2), st.sampled_from(SHIFTS[1:-1])
) | st.integers(0, 3)
keys = st.one_of(
    ints,
    ints.map(str),  # str keys: hashes the test does not choose, mixed in
    st.builds(Key, st.integers(0, 2), ints),  # equal hashes to int keys: collision nodes
)


def assert_reads_match(m: Any, expected: dict[Any, Any], probes: list[Any]) -> None:
    for k in probes:
        if k in expected:
            assert m[k] == expected[k], k
            assert m.get(k, "absent") == expected[k], k
            assert k in m, k
        else:
            assert m.get(k, "absent") == "absent", k
            assert k not in m, k


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(keys, st.integers(0, 9)), max_size=60), st.lists(keys, max_size=30))
def test_lookups_at_every_depth_match_a_dict(
    items: list[tuple[Any, int]], extra: list[Any]
) -> None:
    expected = dict(items)
    probes = [k for k, _ in items] + extra
    batch: PersistentMap[Any, int] = PersistentMap(items)  # one batch
    stored: PersistentMap[Any, int] = PersistentMap()
    for k, v in items:  # a path copy per key
        stored[k] = v
    trie = Trie()
    for k, v in items:
        trie = trie.set(k, v)
    frozen = FrozenMap().update(items)
    for m in (batch, stored, trie, frozen, Trie.from_dict(expected)):
        assert len(m) == len(expected)
        assert_reads_match(m, expected, probes)
    # Delete half of the keys: entries fold back into their parents, level by level.
    gone = list(expected)[::2]
    for k in gone:
        del batch[k]
        trie = trie.delete(k)
        del expected[k]
    for m in (batch, trie):
        assert len(m) == len(expected)
        assert_reads_match(m, expected, probes)


def test_a_chain_of_thirteen_levels_and_a_collision_node() -> None:
    # Keys 1 << s for s = 0, 5, ..., 60 and 0 share the low s bits with 0: each sits one
    # level deeper than the last, down to shift 60; Key(·, 0) shares 0's whole hash.
    chain = [0] + [1 << s for s in SHIFTS]
    collide = [Key(n, 0) for n in range(3)]
    items = [(k, i) for i, k in enumerate(chain + collide)]
    expected = dict(items)
    absent = [2 << s for s in SHIFTS] + [Key(9, 0), Key(0, 1 << 60), 3]
    m: PersistentMap[Any, int] = PersistentMap(items)
    assert_reads_match(m, expected, list(expected) + absent)
    assert_reads_match(m.snapshot(), expected, list(expected) + absent)
    assert_reads_match(Trie.from_dict(expected), expected, list(expected) + absent)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(keys, st.integers(0, 9)), max_size=60), st.lists(keys, max_size=20))
def test_iteration_at_every_depth_yields_each_entry_once(
    items: list[tuple[Any, int]], changed: list[Any]
) -> None:
    # Iterators count where each node's entries end once per node; deltas (values
    # replaced while an older version is kept) and collision nodes included.
    expected = dict(items)
    m: PersistentMap[Any, int] = PersistentMap(items)
    kept = m.snapshot()
    for n, k in enumerate(changed):
        if k in expected:
            m[k] = 100 + n  # a delta over the node the kept version shares
            expected[k] = 100 + n
    for source in (m, m._current(), m.snapshot()):
        assert sorted(map(repr, source)) == sorted(map(repr, expected))
        assert sorted(map(repr, source.keys())) == sorted(map(repr, expected))
        assert sorted(map(repr, source.items())) == sorted(map(repr, expected.items()))
        assert sorted(source.values()) == sorted(expected.values())
    assert dict(kept.items()) == dict(items)
