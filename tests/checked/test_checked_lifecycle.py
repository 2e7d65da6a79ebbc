"""Lifecycle of ``CheckedDict``: deallocation, garbage collection, fork, unpickling state,
and the module's types.

Whatever can crash or hang the interpreter on a regression (a C stack overflow, a double
free, a fork child) runs in a subprocess with a timeout, so a bug fails the test instead
of taking pytest down with it.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from safemap.failfast import (
    CheckedDict,
    ThreadConfinementError,
    _core,
    checked,
)

WAIT = 60.0  # a deadlock guard, not a timing assertion
FREE_THREADED = bool(_core.FREE_THREADED)


def run_script(body: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter of the same build (``-X gil=0`` on a
    free-threaded one); a crash shows as a non-zero return code, a hang as a timeout."""
    flags = ["-X", "gil=0"] if FREE_THREADED else []
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.strip().endswith("ok"), (proc.stdout[-2000:], proc.stderr[-4000:])


# ------------------------------------------------------------------ deallocation


CHAINS = {
    # 300,000 nested maps: plain dicts survive this (CPython's trashcan turns the
    # nested deallocations into a loop); a subtype must engage the trashcan itself.
    "maps": """
        d = checked()
        for _ in range(300_000):
            d = checked({0: d})
    """,
    # map -> iterator -> map -> ...: the iterator is a container too.
    "maps and iterators": """
        d = checked()
        for _ in range(150_000):
            d = checked({0: iter(d)})
    """,
}


@pytest.mark.parametrize("chain", list(CHAINS))
def test_freeing_a_deep_chain_does_not_overflow_the_c_stack(chain: str) -> None:
    body = "from safemap.failfast import checked\n" + textwrap.dedent(CHAINS[chain])
    body += "del d\nprint('ok')\n"
    assert_ok(run_script(body))


def test_name_whose_del_collects_does_not_free_the_map_twice() -> None:
    """Releasing a str-subclass name runs its __del__; a gc.collect() there must not
    find the dying map (it is untracked first)."""
    proc = run_script(
        """
        import gc
        from safemap.failfast import checked

        class Name(str):
            def __str__(self):
                return self  # keeps the subclass: checked() stores str(name)

            def __del__(self):
                gc.collect()

        for _ in range(50):
            d = checked({1: [2]}, name=Name("n"))
            assert type(d.name) is Name
            d[2] = d  # tracked, in a cycle, with a value the collector would clear
            del d
            gc.collect()
        d = checked({1: 2}, name=Name("plain"))
        del d
        print("ok")
        """
    )
    assert_ok(proc)


def test_cycle_through_the_name_is_collected() -> None:
    """The GC sees the map's reference to its name: a name object that refers back to
    the map forms a collectable cycle, not a leak."""
    freed = threading.Event()

    class Canary:
        def __del__(self) -> None:
            freed.set()

    class Name(str):
        owner: Any

        def __str__(self) -> str:
            return self

    name = Name("cyclic")
    d: CheckedDict[Any, Any] = checked({"canary": Canary()}, name=name)
    assert d.name is name
    name.owner = d
    del d, name
    gc.collect()
    assert freed.is_set()


# ------------------------------------------------------------------------ fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_forgets_what_other_threads_were_doing() -> None:
    """Fork while other threads are inside a write, inside reads, iterating, and pinning
    a confined map; the forking thread is itself iterating one map. In the child those
    threads do not exist: every map is usable, except that the forking thread's own
    iteration is still in progress."""
    proc = run_script(
        """
        import os, sys, threading, traceback, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        from safemap.failfast import (
            checked, ConcurrentIterationError, ThreadConfinementError)

        WAIT = 60.0

        class BKey:
            # hash collides with every BKey; comparing with a gated probe blocks
            def __init__(self, gate=None):
                self.gate = gate
            def __hash__(self):
                return 42
            def __eq__(self, other):
                for k in (self, other):
                    if k.gate is not None:
                        k.gate[0].set()
                        assert k.gate[1].wait(WAIT)
                        return False
                return self is other

        release = threading.Event()
        threads = []

        def hold(fn):
            entered = threading.Event()
            t = threading.Thread(target=fn, args=((entered, release),), daemon=True)
            t.start()
            threads.append(t)
            assert entered.wait(WAIT)

        m_write = checked({BKey(): 0, 1: 1}, name="write")
        hold(lambda g: m_write.__setitem__(BKey(g), 1))
        m_read = checked({BKey(): 0, 1: 1}, name="read")
        hold(lambda g: m_read.get(BKey(g)))  # the owner reader
        hold(lambda g: m_read.get(BKey(g)))  # a second reader, on the list
        m_iter = checked({1: 1, 2: 2}, name="iter")
        started = threading.Event()
        def iterate():
            it = iter(m_iter)
            next(it)
            started.set()
            assert release.wait(WAIT)
            list(it)
        threads.append(threading.Thread(target=iterate, daemon=True))
        threads[-1].start()
        assert started.wait(WAIT)
        m_conf = checked({1: 1}, name="conf", confined=True)
        pinned = threading.Event()
        def pin():
            m_conf.get(1)
            pinned.set()
            assert release.wait(WAIT)
        threads.append(threading.Thread(target=pin, daemon=True))
        threads[-1].start()
        assert pinned.wait(WAIT)
        m_mine = checked({1: 1, 2: 2}, name="mine")
        mine = iter(m_mine)
        next(mine)  # the forking thread's own iteration, in progress at the fork

        def in_new_thread(fn):
            out = []
            def body():
                try:
                    out.append(("ok", fn()))
                except BaseException as e:
                    out.append(("err", e))
            t = threading.Thread(target=body)
            t.start()
            t.join(WAIT)
            assert not t.is_alive()
            return out[0]

        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for m in (m_write, m_read, m_iter):
                    m["new"] = 1
                    del m["new"]
                    assert m.get(1) == 1 and len(list(m.items())) == len(m)
                    assert in_new_thread(lambda m=m: m.__setitem__(1, 5)) == ("ok", None)
                # The pin of a gone thread is void: the first user in the child pins it.
                assert m_conf.get(1) == 1
                kind, err = in_new_thread(lambda: m_conf.get(1))
                assert kind == "err" and isinstance(err, ThreadConfinementError), err
                # The forking thread's own iteration is still in progress.
                kind, err = in_new_thread(lambda: m_mine.__setitem__(1, 5))
                assert kind == "err" and isinstance(err, ConcurrentIterationError), err
                assert list(mine) == [2]
                assert in_new_thread(lambda: m_mine.__setitem__(1, 5)) == ("ok", None)
                code = 0
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        release.set()
        list(mine)
        for t in threads:
            t.join(WAIT)
            assert not t.is_alive()
        assert os.waitstatus_to_exitcode(status) == 0, status
        print("ok")
        """
    )
    assert_ok(proc)


# -------------------------------------------------------------- unpickling state


def test_setstate_refuses_a_live_map() -> None:
    """__setstate__ applies only to a map being unpickled: on a live map it would unpin
    a confined map (any thread could take it over) or confine an unconfined one."""
    d = checked({1: 1}, name="c", confined=True)
    assert d[1] == 1  # pinned to this thread
    for state in (True, False):
        with pytest.raises(TypeError, match="being unpickled"):
            d.__setstate__(state)  # type: ignore[attr-defined]
    box: list[BaseException] = []

    def intrude() -> None:
        try:
            d.get(1)
        except BaseException as e:
            box.append(e)

    t = threading.Thread(target=intrude)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    assert len(box) == 1 and isinstance(box[0], ThreadConfinementError)
    plain = checked({1: 1})
    with pytest.raises(TypeError, match="being unpickled"):
        plain.__setstate__(True)  # type: ignore[attr-defined]
    assert plain.confined is False


def test_setstate_applies_once_while_unpickling() -> None:
    r = _core._restore("n")
    r.__setstate__(True)  # type: ignore[attr-defined]
    assert r.confined
    with pytest.raises(TypeError):
        r.__setstate__(False)  # type: ignore[attr-defined]
    assert r.confined
    for confined in (False, True):
        c = pickle.loads(pickle.dumps(checked({1: [2]}, name="p", confined=confined)))
        assert c.confined is confined and c == {1: [2]} and c.name == "p"
        with pytest.raises(TypeError):
            c.__setstate__(not confined)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------ types


def test_every_type_of_the_module_is_ready_and_exported() -> None:
    ready = 1 << 12  # Py_TPFLAGS_READY
    types = {name: t for name, t in vars(_core).items() if isinstance(t, type)}
    assert set(types) == {"CheckedDict", "CheckedDictIterator"}
    for name, t in types.items():
        assert t.__flags__ & ready, name
        assert t.__name__ == name
    d = checked({1: 2})
    for it in (iter(d), reversed(d), iter(d.items()), iter(d.values())):
        assert type(it) is _core.CheckedDictIterator
