"""The programs ``safemap demo`` runs: unsafe code as an application would write it, and its
fixes. The demo prints these functions with :func:`inspect.getsource`, so they carry no
demo machinery: the thread switches come from the data they are given
(:mod:`.scheduling`)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, MutableMapping

from safemap import ConcurrentMap, FrozenMap


def record_hit(hits: dict[str, int]) -> None:
    hits["page"] += 1  # read, add, store: three steps, not one


def record_hit_fixed(hits: ConcurrentMap[str, int]) -> None:
    hits.merge("page", 1, operator.add)  # one atomic read-modify-write


def count_active(sessions: Mapping[str, str]) -> int:
    active = 0
    for state in sessions.values():
        if state == "active":
            active += 1
    return active


def login(sessions: dict[str, str], sid: str) -> None:
    sessions[sid] = "active"


def logout(sessions: dict[str, str], sid: str) -> None:
    del sessions[sid]


def sweep(sessions: dict[str, int], now: int) -> None:
    for sid, expires in sessions.items():  # Go allows delete inside range
        if expires < now:
            del sessions[sid]


def sweep_copy(sessions: dict[str, int], now: int) -> None:
    for sid, expires in list(sessions.items()):  # the usual patch: iterate a copy
        if expires < now:
            del sessions[sid]


def refresh(sessions: dict[str, int], sid: str, now: int) -> None:
    sessions[sid] = now + 30


def sweep_fixed(sessions: ConcurrentMap[str, int], now: int) -> None:
    for sid, expires in sessions.items():  # weakly consistent: deleting is fine
        if expires < now:
            sessions.compare_and_delete(sid, expires)  # not if refreshed meanwhile


class Registry:
    def __init__(self) -> None:
        self._services: dict[str, str] = {}

    def register(self, name: str, address: str) -> None:
        self._services[name] = address

    def services(self) -> dict[str, str]:
        return self._services  # hands out the internal dict


def describe(registry: Registry | SafeRegistry) -> list[str]:
    return [f"{name} at {address}" for name, address in registry.services().items()]


class SafeRegistry:
    def __init__(self) -> None:
        self._services: ConcurrentMap[str, str] = ConcurrentMap()

    def register(self, name: str, address: str) -> None:
        self._services[name] = address

    def services(self) -> FrozenMap[str, str]:
        return self._services.snapshot()  # immutable, one instant, safe to keep


def run_job(
    job_id: str, active: dict[str, str], stats: dict[str, int], work: Callable[[], None]
) -> None:
    active[job_id] = "running"
    try:
        work()
    finally:  # Go: defer func() { delete(active, id); stats["done"]++ }()
        del active[job_id]
        stats["done"] += 1


def run_job_fixed(
    job_id: str,
    active: ConcurrentMap[str, str],
    stats: ConcurrentMap[str, int],
    work: Callable[[], None],
) -> None:
    active[job_id] = "running"
    try:
        work()
    finally:
        active.pop(job_id, None)
        stats.merge("done", 1, operator.add)


class Connection:
    """A connection to ``host`` (stands in for an expensive resource)."""

    def __init__(self, host: str) -> None:
        self.host = host


def connection_for(pool: dict[str, Connection], host: str) -> Connection:
    if host not in pool:  # check...
        pool[host] = Connection(host)  # ...then act: another thread may be in between
    return pool[host]


def connection_for_fixed(pool: ConcurrentMap[str, Connection], host: str) -> Connection | None:
    return pool.compute_if_absent(host, Connection)  # at most one Connection per host


def transfer(accounts: dict[str, int], src: str, dst: str, amount: int) -> None:
    accounts[src] -= amount
    accounts[dst] += amount  # in between, the money is in neither account


def total(accounts: Mapping[str, int]) -> int:
    return sum(accounts.values())


def transfer_fixed(accounts: ConcurrentMap[str, int], src: str, dst: str, amount: int) -> None:
    def move(view: MutableMapping[str, int]) -> None:
        view[src] -= amount
        view[dst] += amount

    accounts.transaction(move)  # all or nothing; nobody sees it half done


def total_fixed(accounts: ConcurrentMap[str, int]) -> int:
    return sum(accounts.snapshot().values())  # the balances of one instant
