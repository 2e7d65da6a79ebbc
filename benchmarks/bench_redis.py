"""RedisMap against Manager().dict() (+ Manager().Lock() for compound operations) and raw
redis-py: ops/s for get, set, compare-and-swap, merge, compute and a 2-key transaction,
with 1 and 4 processes; the near cache's hit cost and invalidation latency.

    python benchmarks/bench_redis.py [--url redis://127.0.0.1:PORT/0] [--ops 2000] [--chunks 10]

Without --url it starts a private redis-server on 127.0.0.1 (a free port, no persistence)
and stops it afterwards. The three contenders run side by side: each worker process holds
all three and runs ``--ops`` operations of each in ``--chunks`` slices that alternate
between them (every worker on the same contender at a time, started together at a
barrier), so a machine whose load changes during the run slows them alike. A slice lasts
from the first worker's start to the last one's finish; a rate is all the operations over
the sum of the slices.
"""

from __future__ import annotations

import argparse
import multiprocessing
import operator
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis

from safemap.redis import RedisMap

OPS = ["get", "set", "cas", "merge", "compute", "txn2"]
KINDS = ["redismap", "raw", "manager"]


def _redismap_op(m: Any, op: str, i: int) -> None:
    if op == "get":
        m.get("k0")
    elif op == "set":
        m[f"k{i % 8}"] = i
    elif op == "cas":
        cur = m.get("c", 0)
        m.compare_and_swap("c", cur, cur + 1)
    elif op == "merge":
        m.merge("n", 1, operator.add)
    elif op == "compute":
        m.compute("n", lambda _k, old: 1 if not isinstance(old, int) else old + 1)
    else:
        m.transaction(_move)


def _move(view: Any) -> None:
    view["a"] = view.get("a", 0) - 1
    view["b"] = view.get("b", 0) + 1


def _manager_op(d: Any, lock: Any, op: str, i: int) -> None:
    if op == "get":
        d.get("k0")
    elif op == "set":
        d[f"k{i % 8}"] = i
    elif op == "cas":  # as RedisMap's: read, then compare-and-swap (under the lock)
        cur = d.get("c", 0)
        with lock:
            if d.get("c", 0) == cur:
                d["c"] = cur + 1
    else:
        with lock:  # the compound operations need the lock to be atomic
            if op in ("merge", "compute"):
                d["n"] = d.get("n", 0) + 1
            else:
                d["a"] = d.get("a", 0) - 1
                d["b"] = d.get("b", 0) + 1


def _raw_op(r: Any, name: str, op: str, i: int) -> None:
    if op == "get":
        r.hget(name, "k0")
    elif op == "set":
        r.hset(name, f"k{i % 8}", i)
    elif op in ("merge", "compute"):
        r.hincrby(name, "n", 1)
    elif op == "cas":
        with r.pipeline() as p:  # WATCH/MULTI/EXEC, as a redis-py user would write it
            while True:
                try:
                    p.watch(name)
                    cur = p.hget(name, "c")
                    p.multi()
                    p.hset(name, "c", int(cur or 0) + 1)
                    p.execute()
                    break
                except redis.WatchError:
                    continue
    else:
        with r.pipeline() as p:
            while True:
                try:
                    p.watch(name)
                    a, b = p.hmget(name, "a", "b")
                    p.multi()
                    p.hset(name, mapping={"a": int(a or 0) - 1, "b": int(b or 0) + 1})
                    p.execute()
                    break
                except redis.WatchError:
                    continue


def _runner(kind: str, target: Any, op: str) -> Callable[[int], None]:
    if kind == "redismap":
        m: RedisMap[Any, Any] = RedisMap(url=target[0], name=target[1])
        return lambda i: _redismap_op(m, op, i)
    if kind == "raw":
        r = redis.Redis.from_url(target[0])
        return lambda i: _raw_op(r, target[1], op, i)
    return lambda i: _manager_op(target[0], target[1], op, i)


def _worker(targets: dict[str, Any], op: str, n: int, chunks: int, step: Any, out: Any) -> None:
    runs = {kind: _runner(kind, targets[kind], op) for kind in KINDS}
    for run in runs.values():
        for i in range(20):  # warm up: connections, scripts, what the handle knows
            run(i)
    spans = []
    per = n // chunks
    for r in range(chunks):
        for j in range(len(KINDS)):
            kind = KINDS[(r + j) % len(KINDS)]
            run = runs[kind]
            step.wait()  # every worker runs the same contender at the same time
            began = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
            for i in range(per):
                run(i)
            spans.append((kind, r, began, time.perf_counter()))
    out.put(spans)


def _measure(op: str, procs: int, n: int, chunks: int, url: str, manager: Any) -> dict[str, float]:
    """Ops/s of each contender: the workers run ``n`` operations of each, in ``chunks``
    slices that alternate between the contenders (all workers on the same one at a time),
    so a change in the machine's load affects all three alike. A slice's time is from the
    first worker's start to the last one's finish."""
    targets = {
        "redismap": (url, RedisMap(url=url).name),
        "raw": (url, RedisMap(url=url).name),
        "manager": (manager.dict(), manager.Lock()),
    }
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    step = ctx.Barrier(procs)
    workers = [
        ctx.Process(target=_worker, args=(targets, op, n, chunks, step, out)) for _ in range(procs)
    ]
    for w in workers:
        w.start()
    spans = [span for _ in workers for span in out.get(timeout=600)]
    for w in workers:
        w.join()
    slices: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for kind, r, began, ended in spans:
        slices.setdefault((kind, r), []).append((began, ended))
    seconds = dict.fromkeys(KINDS, 0.0)
    for (kind, _), times in slices.items():
        seconds[kind] += max(e for _, e in times) - min(b for b, _ in times)
    done = procs * (n // chunks) * chunks
    return {kind: done / seconds[kind] for kind in KINDS}


def _near_cache(url: str, n: int, manager: Any) -> tuple[float, float, float, float]:
    near: RedisMap[str, int] = RedisMap({"k0": 1}, url=url, near_cache=True)
    writer: RedisMap[str, int] = RedisMap(url=url, name=near.name)
    d = manager.dict({"k0": 1})
    near["k0"]
    hits, gets = [], []
    for _ in range(5):  # side by side, as above
        start = time.perf_counter()
        for _ in range(n * 10):
            near["k0"]
        hits.append((time.perf_counter() - start) / (n * 10))
        start = time.perf_counter()
        for _ in range(n):
            d.get("k0")
        gets.append((time.perf_counter() - start) / n)
    latencies = []
    for i in range(50):
        near["k0"]
        t0 = time.perf_counter()
        writer["k0"] = i + 2
        while near["k0"] != i + 2:
            pass
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    near.close()
    writer.close()
    return (
        statistics.median(hits),
        statistics.median(gets),
        latencies[len(latencies) // 2],
        latencies[-1],
    )


def _server() -> tuple[str, subprocess.Popen[bytes] | None]:
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("no redis-server on PATH; pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
         "no", "--dir", tempfile.mkdtemp()],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    return url, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--only", help="comma-separated ops (default: all)")
    args = parser.parse_args()
    url, proc = (args.url, None) if args.url else _server()
    ops = args.only.split(",") if args.only else OPS
    try:
        manager = multiprocessing.Manager()
        print(f"{'op':8} {'procs':>5} {'RedisMap':>10} {'raw redis':>10} {'Manager':>10}  ratio")
        for op in ops:
            for procs in (1, 4):
                rates = _measure(op, procs, args.ops, args.chunks, url, manager)
                rm, raw, man = (rates[k] for k in KINDS)
                print(f"{op:8} {procs:>5} {rm:>10.0f} {raw:>10.0f} {man:>10.0f} {rm / man:5.2f}x")
        hit, manager_get, p50, worst = _near_cache(url, args.ops, manager)
        print(f"near-cache hit {hit * 1e6:.2f} us vs Manager().dict() get "
              f"{manager_get * 1e6:.1f} us: {manager_get / hit:.0f}x")  # fmt: skip
        print(f"invalidation latency: median {p50 * 1e6:.0f} us, worst of 50 {worst * 1e6:.0f} us")
        manager.shutdown()
    finally:
        if proc is not None:
            proc.kill()


if __name__ == "__main__":
    main()
