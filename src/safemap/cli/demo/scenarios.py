"""The scenarios of ``safemap demo``: one row of :data:`SCENARIOS` per failure.

A scenario is data: what the unsafe code does, the code itself, and four parts — what plain
Python does with it, what :mod:`safemap.race` reports, what :func:`safemap.checked` raises,
and the fix — each a function that writes its part of the page. :func:`render` lays out
every scenario the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from safemap import ConcurrentMap, checked

from .page import WIDTH, Page, detector, reports_section
from .programs import (
    Registry,
    SafeRegistry,
    connection_for,
    connection_for_fixed,
    count_active,
    describe,
    login,
    logout,
    record_hit,
    record_hit_fixed,
    refresh,
    run_job,
    run_job_fixed,
    sweep,
    sweep_copy,
    sweep_fixed,
    total,
    total_fixed,
    transfer,
    transfer_fixed,
)
from .scheduling import (
    Count,
    DemoThread,
    Key,
    Text,
    Time,
    in_turns,
    other,
    overlapping_increments,
    run_to_end,
)

Part = Callable[[Page], None]


@dataclass(frozen=True)
class Scenario:
    """One stop of the tour.

    ``name`` (for ``--scenario``), ``title``, ``go`` (the Go failure it corresponds to),
    ``unsafe`` (one sentence on the unsafe code) and ``code`` (the functions and classes
    printed under it); then the parts, each writing its section: ``plain``, ``race``,
    ``checked`` and ``fix`` (titled ``fix_title``, showing ``fix_code`` first).
    """

    name: str
    title: str
    go: str
    unsafe: str
    code: tuple[Any, ...]
    plain: Part
    race: Part
    checked: Part
    fix_title: str
    fix_code: tuple[Any, ...]
    fix: Part


def no_work() -> None:
    """A job's work (the demo's jobs do none)."""


def churn(sessions: dict[str, str]) -> None:
    """web-1 logs s4 in and s2 out (the key set changes, its size does not)."""
    login(sessions, "s4")
    logout(sessions, "s2")


# -------------------------------------------------------------------------- lost update


def _lost_update_plain(page: Page) -> None:
    hits: dict[str, int] = {"page": Count(0)}
    run_to_end(
        "worker-1",
        record_hit,
        hits,
        script=(other("add", "worker-2", record_hit, hits),),
    )
    page.wrap(
        "worker-1 reads hits['page'] (0) and is switched out before it stores 0 + 1; "
        "worker-2 runs record_hit from start to end; worker-1 stores its 1.",
        indent=2,
    )
    page.lines.append("")
    page.say(f"hits == {hits!r}    two increments, expected 2: one update lost, no error", indent=2)


def _lost_update_race(page: Page) -> None:
    with detector() as (race, reports):
        hits = race.watch({"page": 0}, name="hits")
        in_turns(("worker-1", record_hit, (hits,)), ("worker-2", record_hit, (hits,)))
    page.wrap(
        "Under race.detect(), worker-1 runs record_hit, then worker-2 does. They never "
        f"overlap: hits == {dict(hits)!r}, correct this time. The detector reports the "
        "race anyway: nothing orders the two threads' accesses.",
        indent=2,
    )
    page.lines.append("")
    reports_section(page, reports, expect=True)


def _lost_update_checked(page: Page) -> None:
    hits = checked({Key("page"): Count(0)}, name="hits")
    first, second = overlapping_increments(
        "worker-1", record_hit, (hits,), "worker-2", record_hit, (hits,)
    )
    page.wrap(
        "hits = safemap.checked(name='hits'). Both threads read hits['page']; "
        "worker-2 stores while worker-1's store is still in progress:",
        indent=2,
    )
    page.lines.append("")
    page.errors((first, second))


def _lost_update_fix(page: Page) -> None:
    fixed: ConcurrentMap[str, int] = ConcurrentMap({"page": 0})
    threads, per_thread = 4, 10_000

    def hammer() -> None:
        for _ in range(per_thread):
            record_hit_fixed(fixed)

    workers = [DemoThread(f"worker-{i + 1}", hammer) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.finish()
    page.say(
        f"{threads} threads x {per_thread:,} hits: fixed == {dict(fixed)!r}, exact on every run",
        indent=2,
    )


# ---------------------------------------------------------------- iterate while writing


def _sessions_with_switch() -> dict[str, str]:
    return {"s1": Text("active"), "s2": "idle", "s3": "active"}  # s1: switch point


def _overwrite(d: dict[str, str], sid: str) -> None:
    d[sid] = "idle"


# What web-1 does while the reporter is inside its loop.
_SESSION_WRITES: tuple[tuple[str, Callable[[dict[str, str]], None]], ...] = (
    ("login(sessions, 's4')", lambda d: login(d, "s4")),
    ("logout(sessions, 's2')", lambda d: logout(d, "s2")),
    ("logout 's2' + login 's4'", churn),
    ("sessions['s3'] = 'idle'", lambda d: _overwrite(d, "s3")),
)


def _iteration_plain(page: Page) -> None:
    page.wrap(
        "sessions = {'s1': 'active', 's2': 'idle', 's3': 'active'}. The reporter thread "
        "runs count_active; after the first session, web-1 runs and finishes:",
        indent=2,
    )
    page.lines.append("")
    for label, write in _SESSION_WRITES:
        d = _sessions_with_switch()
        reporter = run_to_end(
            "reporter",
            count_active,
            d,
            script=(other("use", "web-1", write, d),),
        )
        outcome = (
            f"{type(reporter.error).__name__}: {reporter.error}"
            if reporter.error is not None
            else f"no error; count_active returned {reporter.result}"
        )
        page.say(f"web-1 {label + ':':<28} {outcome}", indent=2)
    page.lines.append("")
    page.wrap(
        "Writes that keep the size (the last two lines) go unnoticed: the loop silently "
        "counts a mix of the map before and after them.",
        indent=2,
    )


def _iteration_race(page: Page) -> None:
    with detector() as (race, reports):
        d = race.watch({"s1": "active", "s2": "idle", "s3": "active"}, name="sessions")
        reporter, _ = in_turns(
            ("reporter", count_active, (d,)),
            ("web-1", churn, (d,)),
        )
    page.wrap(
        "The reporter counts (it finds "
        f"{reporter.result}, without error), then web-1 logs s4 in and s2 out. No "
        "overlap, no error; the detector reports:",
        indent=2,
    )
    page.lines.append("")
    reports_section(page, reports, expect=True)


def _iteration_checked(page: Page) -> None:
    page.wrap(
        "sessions = safemap.checked(..., name='sessions'); the same schedule as above:",
        indent=2,
    )
    for label, write in (_SESSION_WRITES[0], _SESSION_WRITES[3]):
        d = checked(_sessions_with_switch(), name="sessions")
        web: list[DemoThread] = []
        reporter = run_to_end(
            "reporter",
            count_active,
            d,
            script=(other("use", "web-1", write, d, into=web),),
        )
        page.lines.append("")
        page.say(f"web-1 {label}:", indent=2)
        page.errors((reporter, *web))


def _iteration_fix(page: Page) -> None:
    views: list[tuple[str, Callable[[ConcurrentMap[str, str]], Mapping[str, str]]]] = [
        ("count_active(sessions)", lambda m: m),
        ("count_active(sessions.snapshot())", lambda m: m.snapshot()),
    ]
    for label, view in views:
        m: ConcurrentMap[str, str] = ConcurrentMap(_sessions_with_switch())
        reporter = run_to_end(
            "reporter", count_active, view(m), script=(other("use", "web-1", churn, m),)
        )
        if reporter.error is not None:
            outcome = f"{type(reporter.error).__name__}: {reporter.error}"
        elif view is views[1][1]:
            outcome = f"no error, count {reporter.result} (the sessions of one instant)"
        elif reporter.result in (2, 3):  # s4's count depends on where it lands: not shown
            outcome = "no error, s1 and s3 (present throughout) counted"
        else:
            outcome = f"no error, but count {reporter.result}: s1 or s3 missed"
        page.say(f"{label}: {outcome}", indent=2)
    page.lines.append("")
    page.wrap(
        "Iterating a ConcurrentMap never raises and never yields a key twice; every session "
        "present throughout is counted (weakly consistent). A snapshot() counts exactly the "
        "sessions of one instant.",
        indent=2,
    )


# ----------------------------------------------------------------------- delete in loop


def _expiries_with_switch() -> dict[str, int]:
    return {"s1": Time(5), "s2": 20, "s3": 7}  # s1: switch point


def _delete_in_loop_plain(page: Page) -> None:
    d = _expiries_with_switch()
    janitor = run_to_end("janitor", sweep, d, 10)
    page.say(
        "sessions = {'s1': 5, 's2': 20, 's3': 7}; sweep(sessions, now=10) in one thread:", indent=2
    )
    page.say(f"{type(janitor.error).__name__}: {janitor.error}", indent=4)
    page.lines.append("")
    page.say("The usual patch iterates a copy, and the janitor runs in its own thread:", indent=2)
    page.lines.append("")
    page.code(sweep_copy, refresh)
    page.lines.append("")
    d = _expiries_with_switch()
    run_to_end(
        "janitor",
        sweep_copy,
        d,
        10,
        script=(other("use", "web-1", refresh, d, "s1", 10),),
    )
    page.wrap(
        "The janitor reads s1's expiry (5 < 10) and is switched out; web-1 refreshes s1 "
        f"(expires 40); the janitor deletes it anyway: sessions == {d!r}. No error, and the "
        "user of s1 was just logged out.",
        indent=2,
    )


def _delete_in_loop_race(page: Page) -> None:
    with detector() as (race, reports):
        d = race.watch({"s1": 5, "s2": 20, "s3": 7}, name="sessions")
        in_turns(("janitor", sweep_copy, (d, 10)), ("web-1", refresh, (d, "s2", 10)))
    page.wrap(
        "The janitor sweeps (s1 and s3 expire), then web-1 refreshes s2: no overlap, "
        f"sessions == {dict(d)!r}. The detector reports the unordered read and write "
        "of s2:",
        indent=2,
    )
    page.lines.append("")
    reports_section(page, reports, expect=True)


def _delete_in_loop_checked(page: Page) -> None:
    plain_keys = checked({"s1": 5, "s2": 20, "s3": 7}, name="sessions")
    janitor = run_to_end("janitor", sweep, plain_keys, 10)
    page.wrap(
        "sweep on a checked() map in one thread: not a concurrency bug, so checked() "
        "stays silent and dict's own error comes through:",
        indent=2,
    )
    page.lines.append("")
    if janitor.error is not None:
        page.error("janitor", janitor.error)
    page.lines.append("")
    d: Any = checked({Key("s1"): 5, Key("s2"): 20, Key("s3"): 7}, name="sessions")
    web: list[DemoThread] = []
    janitor = run_to_end(
        "janitor",
        sweep_copy,
        d,
        10,
        script=(other("lookup", "web-1", refresh, d, "s1", 10, into=web),),
    )
    page.wrap(
        "sweep_copy on a checked() map: web-1 refreshes s1 while the janitor's "
        "del sessions['s1'] is in progress:",
        indent=2,
    )
    page.lines.append("")
    for t in (janitor, *web):
        if t.error is not None:
            page.error(t.name, t.error)


def _delete_in_loop_fix(page: Page) -> None:
    m: ConcurrentMap[str, int] = ConcurrentMap(_expiries_with_switch())
    janitor = run_to_end(
        "janitor",
        sweep_fixed,
        m,
        10,
        script=(other("use", "web-1", refresh, m, "s1", 10),),
    )
    page.wrap(
        "The same schedule: the janitor reads s1's expiry, web-1 refreshes s1, the janitor "
        "tries to delete it. "
        + (f"{type(janitor.error).__name__}: {janitor.error}" if janitor.error else "No error; ")
        + f"sessions == {dict(sorted(m.items()))!r}: the refreshed session survives, the "
        "expired s3 is gone.",
        indent=2,
    )


# ------------------------------------------------------------------------ internal dict


def _registry_with_switch() -> Registry:
    r = Registry()
    r.register("db", Text("10.0.0.1"))
    r.register("cache", Text("10.0.0.2"))
    return r


def _internal_dict_plain(page: Page) -> None:
    r = _registry_with_switch()
    caller = run_to_end(
        "web-1",
        describe,
        r,
        script=(other("use", "owner", r.register, "queue", "10.0.0.3"),),
    )
    page.wrap(
        "web-1 runs describe(registry); after the first service, the owner thread "
        "registers 'queue':",
        indent=2,
    )
    page.say(f"{type(caller.error).__name__}: {caller.error}", indent=4)


def _internal_dict_race(page: Page) -> None:
    with detector() as (race, reports):
        r = Registry()
        r._services = race.watch({"db": "10.0.0.1", "cache": "10.0.0.2"}, name="services")
        caller, _ = in_turns(
            ("web-1", describe, (r,)), ("owner", r.register, ("queue", "10.0.0.3"))
        )
    page.wrap(
        "registry._services = race.watch(..., name='services'). web-1 describes the "
        f"registry ({len(caller.result)} services, no error), then the owner registers "
        "'queue'. The detector reports:",
        indent=2,
    )
    page.lines.append("")
    reports_section(page, reports, expect=True)


def _internal_dict_checked(page: Page) -> None:
    page.say("registry._services = safemap.checked(..., name='services'):", indent=2)
    for label, name, address in (
        ("registers 'queue'", "queue", "10.0.0.3"),
        ("moves 'db' (same key set)", "db", "10.0.0.9"),
    ):
        r = _registry_with_switch()
        r._services = checked(r._services, name="services")
        owner: list[DemoThread] = []
        caller = run_to_end(
            "web-1",
            describe,
            r,
            script=(other("use", "owner", r.register, name, address, into=owner),),
        )
        page.lines.append("")
        page.say(f"while web-1 iterates, the owner {label}:", indent=2)
        page.errors((caller, *owner))


def _internal_dict_fix(page: Page) -> None:
    safe = SafeRegistry()
    safe.register("db", Text("10.0.0.1"))
    safe.register("cache", Text("10.0.0.2"))
    caller = run_to_end(
        "web-1",
        describe,
        safe,
        script=(other("use", "owner", safe.register, "queue", "10.0.0.3"),),
    )
    page.wrap(
        "The same schedule: "
        + (f"{type(caller.error).__name__}: {caller.error}. " if caller.error else "no error; ")
        + f"web-1 got {sorted(caller.result)!r} (the services at one instant); the registry now "
        f"holds {len(safe.services())}.",
        indent=2,
    )


# ---------------------------------------------------------------------- cleanup on exit


def _cleanup_plain(page: Page) -> None:
    active: dict[str, str] = {}
    stats: dict[str, int] = {"done": Count(0)}
    run_to_end(
        "job-1",
        run_job,
        "job-1",
        active,
        stats,
        no_work,
        script=(other("add", "job-2", run_job, "job-2", active, stats, no_work),),
    )
    page.wrap(
        "job-1 and job-2 finish together: job-1's cleanup reads stats['done'] (0) and is "
        "switched out; job-2 runs to its end; job-1 stores its 1.",
        indent=2,
    )
    page.lines.append("")
    page.say(f"stats == {stats!r}    two jobs done, expected 2: one lost, no error", indent=2)


def _cleanup_race(page: Page) -> None:
    with detector() as (race, reports):
        active = race.watch({}, name="active")
        stats = race.watch({"done": 0}, name="stats")
        in_turns(
            ("job-1", run_job, ("job-1", active, stats, no_work)),
            ("job-2", run_job, ("job-2", active, stats, no_work)),
        )
    page.wrap(
        "job-1 runs and exits, then job-2 does: stats == "
        f"{dict(stats)!r}, correct this time. The jobs' own keys in 'active' do not "
        "conflict (different keys); their cleanups' updates of stats['done'] do:",
        indent=2,
    )
    page.lines.append("")
    reports_section(page, reports, expect=True)


def _cleanup_checked(page: Page) -> None:
    active: dict[str, str] = checked(name="active")
    stats = checked({Key("done"): Count(0)}, name="stats")
    first, second = overlapping_increments(
        "job-1",
        run_job,
        ("job-1", active, stats, no_work),
        "job-2",
        run_job,
        ("job-2", active, stats, no_work),
    )
    page.wrap(
        "active and stats are checked() maps; job-2's cleanup stores stats['done'] while "
        "job-1's store is in progress:",
        indent=2,
    )
    page.lines.append("")
    page.errors((first, second))


def _cleanup_fix(page: Page) -> None:
    jobs = 8
    fixed_active: ConcurrentMap[str, str] = ConcurrentMap()
    fixed_stats: ConcurrentMap[str, int] = ConcurrentMap({"done": 0})
    together = threading.Barrier(jobs)
    threads = [
        DemoThread(
            f"job-{i + 1}", run_job_fixed, f"job-{i + 1}", fixed_active, fixed_stats, together.wait
        )
        for i in range(jobs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.finish()
    page.say(
        f"{jobs} jobs released together by a Barrier exit at once: stats == "
        f"{dict(fixed_stats)!r}, active == {dict(fixed_active)!r}",
        indent=2,
    )


# ----------------------------------------------------------------------- check then act


def _noop() -> None:
    """A scripted step that lets the first switch point pass."""


def _check_then_act_plain(page: Page) -> None:
    pool: dict[str, Any] = {}
    host = Key("db")
    web2: list[DemoThread] = []
    web1 = run_to_end(
        "web-1",
        connection_for,
        pool,
        host,
        script=(("lookup", _noop), other("lookup", "web-2", connection_for, pool, host, into=web2)),
    )
    opened = len({id(web1.result), id(web2[0].result)})
    page.wrap(
        "web-1 finds no connection for 'db' and opens one; before it stores it, web-2 runs "
        "connection_for from start to end (it finds none either, opens and stores its own); "
        "web-1 stores its connection over web-2's.",
        indent=2,
    )
    page.lines.append("")
    page.wrap(
        f"{opened} connections opened for one host: web-1 uses the pool's, web-2 one the "
        f"pool no longer holds (leaked). No error.",
        indent=2,
    )


def _check_then_act_race(page: Page) -> None:
    with detector() as (race, reports):
        pool = race.watch({}, name="pool")
        first, second = in_turns(
            ("web-1", connection_for, (pool, "db")), ("web-2", connection_for, (pool, "db"))
        )
    same = "the same connection" if first.result is second.result else "different connections"
    page.wrap(
        "web-1 opens and stores a connection for 'db', then web-2 asks: they get "
        f"{same}, correct this time. The detector reports web-2's check unordered with "
        "web-1's store:",
        indent=2,
    )
    page.lines.append("")
    reports_section(page, reports, expect=True)


def _check_then_act_checked(page: Page) -> None:
    pool: dict[str, Any] = checked(name="pool")
    host = Key("db")
    web2: list[DemoThread] = []
    web1 = run_to_end(
        "web-1",
        connection_for,
        pool,
        host,
        script=(("lookup", _noop), other("lookup", "web-2", connection_for, pool, host, into=web2)),
    )
    page.wrap(
        "pool = safemap.checked(name='pool'); the same schedule: web-2 checks the pool while "
        "web-1's store is in progress:",
        indent=2,
    )
    page.lines.append("")
    page.errors((web1, *web2))


def _check_then_act_fix(page: Page) -> None:
    pool: ConcurrentMap[str, Any] = ConcurrentMap()
    askers = 8
    together = threading.Barrier(askers)

    def ask() -> Any:
        together.wait()
        return connection_for_fixed(pool, "db")

    threads = [DemoThread(f"web-{i + 1}", ask) for i in range(askers)]
    for t in threads:
        t.start()
    for t in threads:
        t.finish()
    opened = len({id(t.result) for t in threads})
    shared = all(t.result is pool["db"] for t in threads)
    page.wrap(
        f"{askers} threads ask for 'db' at once (a Barrier releases them together): "
        f"{opened} connection opened, "
        + ("and every thread got the one in the pool." if shared else "but threads differ!"),
        indent=2,
    )


# -------------------------------------------------------------------- multi-key update


def _multi_key_plain(page: Page) -> None:
    accounts: dict[str, int] = {"alice": 100, "bob": Count(0)}
    auditor: list[DemoThread] = []
    run_to_end(
        "teller",
        transfer,
        accounts,
        "alice",
        "bob",
        30,
        script=(other("add", "auditor", total, accounts, into=auditor),),
    )
    page.wrap(
        "accounts = {'alice': 100, 'bob': 0}. The teller moves 30 from alice to bob; after "
        "it took the 30 from alice and before it gave them to bob, the auditor runs "
        "total(accounts):",
        indent=2,
    )
    page.lines.append("")
    page.say(
        f"total == {auditor[0].result}    expected 100: the auditor saw the transfer half "
        "done, no error",
        indent=2,
    )


def _multi_key_race(page: Page) -> None:
    with detector() as (race, reports):
        accounts = race.watch({"alice": 100, "bob": 0}, name="accounts")
        _, auditor = in_turns(
            ("teller", transfer, (accounts, "alice", "bob", 30)),
            ("auditor", total, (accounts,)),
        )
    page.wrap(
        f"The teller transfers, then the auditor totals ({auditor.result}, correct this "
        "time). The detector reports the auditor's reads unordered with the teller's writes:",
        indent=2,
    )
    page.lines.append("")
    reports_section(page, reports, expect=True)


def _multi_key_checked(page: Page) -> None:
    accounts: dict[str, int] = checked({"alice": 100, Key("bob"): 0}, name="accounts")
    auditor: list[DemoThread] = []
    teller = run_to_end(
        "teller",
        transfer,
        accounts,
        "alice",
        "bob",
        30,
        script=(("lookup", _noop), other("lookup", "auditor", total, accounts, into=auditor)),
    )
    page.wrap(
        "accounts = safemap.checked(..., name='accounts'); the auditor totals while the "
        "teller's store into bob is in progress:",
        indent=2,
    )
    page.lines.append("")
    page.errors((teller, *auditor))


def _multi_key_fix(page: Page) -> None:
    accounts: ConcurrentMap[str, int] = ConcurrentMap({"alice": 100, "bob": 0})
    rounds = 1_000
    totals: set[int] = set()

    def teller() -> None:
        for i in range(rounds):
            src, dst = ("alice", "bob") if i % 2 == 0 else ("bob", "alice")
            transfer_fixed(accounts, src, dst, 30)

    def auditor() -> None:
        for _ in range(rounds):
            totals.add(total_fixed(accounts))

    threads = [DemoThread("teller", teller), DemoThread("auditor", auditor)]
    for t in threads:
        t.start()
    for t in threads:
        t.finish()
    page.wrap(
        f"A teller makes {rounds:,} transfers while an auditor takes {rounds:,} totals: "
        f"the totals seen were {sorted(totals)!r}, on every run.",
        indent=2,
    )


# --------------------------------------------------------------------------- the table

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="lost-update",
        title="concurrent d[k] += 1 loses updates",
        go="fatal error: concurrent map writes",
        unsafe="two threads count hits in a shared dict.",
        code=(record_hit,),
        plain=_lost_update_plain,
        race=_lost_update_race,
        checked=_lost_update_checked,
        fix_title="ConcurrentMap.merge",
        fix_code=(record_hit_fixed,),
        fix=_lost_update_fix,
    ),
    Scenario(
        name="iterate-while-writing",
        title="iterating a dict while another thread inserts and deletes",
        go="fatal error: concurrent map iteration and map write",
        unsafe="one thread counts sessions while web threads log in and out.",
        code=(count_active, login, logout),
        plain=_iteration_plain,
        race=_iteration_race,
        checked=_iteration_checked,
        fix_title="iterate a ConcurrentMap, or a snapshot() of it",
        fix_code=(),
        fix=_iteration_fix,
    ),
    Scenario(
        name="check-then-act",
        title="if k not in d: d[k] = make() runs make() twice",
        go="fatal error: concurrent map read and map write",
        unsafe="web threads share a pool of connections, one per host.",
        code=(connection_for,),
        plain=_check_then_act_plain,
        race=_check_then_act_race,
        checked=_check_then_act_checked,
        fix_title="ConcurrentMap.compute_if_absent",
        fix_code=(connection_for_fixed,),
        fix=_check_then_act_fix,
    ),
    Scenario(
        name="delete-in-loop",
        title="deleting during iteration",
        go="legal inside range in Go; a RuntimeError, or a check-then-act race, in Python",
        unsafe="a janitor deletes expired sessions, ported from Go.",
        code=(sweep,),
        plain=_delete_in_loop_plain,
        race=_delete_in_loop_race,
        checked=_delete_in_loop_checked,
        fix_title="ConcurrentMap.compare_and_delete",
        fix_code=(sweep_fixed,),
        fix=_delete_in_loop_fix,
    ),
    Scenario(
        name="internal-dict",
        title="returning the internal dict; the caller iterates while the owner writes",
        go="fatal error: concurrent map iteration and map write",
        unsafe="a registry hands out its internal dict; a caller iterates it.",
        code=(Registry, describe),
        plain=_internal_dict_plain,
        race=_internal_dict_race,
        checked=_internal_dict_checked,
        fix_title="hand out snapshot()",
        fix_code=(SafeRegistry,),
        fix=_internal_dict_fix,
    ),
    Scenario(
        name="multi-key-update",
        title="a transfer between two keys, seen half done",
        go="fatal error: concurrent map read and map write",
        unsafe="a teller moves money between accounts while an auditor totals them.",
        code=(transfer, total),
        plain=_multi_key_plain,
        race=_multi_key_race,
        checked=_multi_key_checked,
        fix_title="transaction() and snapshot()",
        fix_code=(transfer_fixed, total_fixed),
        fix=_multi_key_fix,
    ),
    Scenario(
        name="cleanup-on-exit",
        title="writes to a shared dict from cleanup code as threads exit",
        go="defer: fatal error: concurrent map writes",
        unsafe="jobs clean up shared state as their threads exit (Go's defer).",
        code=(run_job,),
        plain=_cleanup_plain,
        race=_cleanup_race,
        checked=_cleanup_checked,
        fix_title="ConcurrentMap, merge and pop",
        fix_code=(run_job_fixed,),
        fix=_cleanup_fix,
    ),
)


def render(scenario: Scenario, number: int) -> str:
    """The text of one scenario (normalised, so equal on every run): its header, the
    unsafe code, then each part under its heading."""
    page = Page()
    page.lines += [
        "=" * WIDTH,
        f"{number}/{len(SCENARIOS)}  {scenario.name}: {scenario.title}",
        f"     Go: {scenario.go}",
        "=" * WIDTH,
        "",
    ]
    page.say(f"The unsafe code: {scenario.unsafe}")
    page.lines.append("")
    page.code(*scenario.code)
    parts = (
        ("plain Python", (), scenario.plain),
        ("safemap.race", (), scenario.race),
        ("safemap.checked()", (), scenario.checked),
        (f"the fix: {scenario.fix_title}", scenario.fix_code, scenario.fix),
    )
    for heading, code, write in parts:
        page.heading(heading)
        if code:
            page.code(*code)
            page.lines.append("")
        write(page)
    return page.text()
