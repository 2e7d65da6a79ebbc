"""A batch rearranges the slots of a node it owns in place when the node does not grow.

Building a trie turns entries into sub-tries at every upper node (32 times per node) and a
batch's deletions remove positions: a batch does both in the node itself rather than in a
copy. These tests drive exactly those paths (int keys hash to themselves, so ``p + 32 * j``
sends keys to position ``p`` of the root and then deeper) and check the batch against a
dict, that the version it started from never changes, and that every removed or replaced
value is released exactly when nothing holds it any more.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import FrozenMap, PersistentMap
from safemap.persistent import Trie


class Box:
    __slots__ = ("__weakref__", "n")

    def __init__(self, n: int) -> None:
        self.n = n


keys = st.one_of(
    st.integers(0, 31).map(lambda p: p),  # root positions
    st.builds(lambda p, j: p + 32 * j, st.integers(0, 3), st.integers(1, 40)),  # deeper
    st.builds(lambda p, j: p + 1024 * j, st.integers(0, 1), st.integers(1, 40)),
)
steps = st.lists(st.tuples(st.booleans(), keys), max_size=120)


@settings(max_examples=200, deadline=None)
@given(st.lists(keys, max_size=40), steps)
def test_batches_of_sets_and_pops_match_a_dict(
    start: list[int], ops: list[tuple[bool, int]]
) -> None:
    base = Trie.from_dict({k: -k for k in start})
    before = base.to_dict()
    b = base.mutate()
    expected = dict(before)
    for n, (is_set, k) in enumerate(ops):
        if is_set:
            assert b.set(k, n) == (k not in expected)
            expected[k] = n
        else:
            assert b.pop(k, None) == expected.pop(k, None)
        assert len(b) == len(expected)
    done = b.finish()
    assert done.to_dict() == expected
    assert all(done[k] == v for k, v in expected.items())
    assert base.to_dict() == before  # the version the batch started from never changed


def test_values_a_batch_drops_are_released_exactly_when_nothing_holds_them() -> None:
    for rounds in range(3):
        keys_ = [p + 32 * j for p in range(32) for j in range(8)]  # every root position deep
        boxes = {k: Box(k) for k in keys_}
        refs = {k: weakref.ref(v) for k, v in boxes.items()}
        m: PersistentMap[int, Box] = PersistentMap(boxes)  # one batch: entries become children
        f = FrozenMap(boxes).update({})  # the same through FrozenMap's batch
        del boxes
        gc.collect()
        assert all(r() is not None for r in refs.values())
        b = m._current().mutate()
        popped = [b.pop(k) for k in keys_[rounds::3]]  # removals in nodes the batch owns
        assert all(p.n == k for p, k in zip(popped, keys_[rounds::3], strict=True))
        m._publish(b.finish())
        del b
        # Still held: by the popped list, and by the FrozenMap's own version.
        assert all(refs[k]() is not None for k in keys_)
        del f
        gc.collect()
        assert all(refs[k]() is not None for k in keys_)  # popped, or still in m
        del popped
        gc.collect()
        gone = set(keys_[rounds::3])
        assert all((refs[k]() is None) == (k in gone) for k in keys_)
        held: Any = m
        del m
        del held
        gc.collect()
        assert all(r() is None for r in refs.values())
