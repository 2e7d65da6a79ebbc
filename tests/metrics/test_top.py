"""``safemap top --once`` against the real endpoints of a real process, and its rate
arithmetic on two given reads."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from safemap.cli.main import main
from safemap.cli.top import MapView, parse, rates

from . import serve_maps


def top(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")  # rich's width when stdout is not a terminal
    return subprocess.run(
        [sys.executable, "-m", "safemap", "top", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def row(output: str, name: str) -> list[str]:
    """The cells of the table row of map ``name``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name!r} in:\n{output}")


def test_once_shows_every_map_and_its_hot_keys(served: dict[str, str]) -> None:
    result = top("--url", served["metrics"], "--once", "--interval", "0.5", "--keys", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    want = serve_maps.expected()
    hit = 100 * want["hit"] / (want["hit"] + want["miss"])
    for kind in serve_maps.MAP_TYPES:
        _, shown_kind, entries, ops, hits, contended, wait, wdi, mailbox = row(out, kind)
        assert shown_kind == kind
        assert contended.endswith("%") and float(wait) >= 0
        actor = f"0/{serve_maps.ACTOR_CAPACITY} (0%)"  # served: nothing waits
        assert mailbox == (actor if kind.endswith("ActorMap") else "-")
        assert int(entries.replace(",", "")) == want["entries"]
        assert float(ops) == 0.0  # the workload is over: nothing between the two reads
        assert hits == f"{hit:.1f}%"
        assert int(wdi) == want["writes_during_iteration"]
    busy = row(out, "busy")
    assert float(busy[3].replace(",", "")) > 0  # a thread keeps writing to it
    rows = hot_key_rows(out)  # map, key, count
    assert [r[0] for r in rows] == ["hot", "hot"]  # --keys 2; untracked maps list none
    assert rows[0][1] == repr("hot")
    assert int(rows[0][2].replace(",", "")) >= serve_maps.HOT_READERS * serve_maps.HOT_READS
    assert "dropped" not in out


def hot_key_rows(output: str) -> list[list[str]]:
    _, _, table = output.partition("hot keys")
    return [
        cells
        for line in table.splitlines()
        if (cells := [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]) and cells[0] != "map"
    ]


def test_prometheus_client_server_has_no_hot_keys(
    served: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["top", "--url", served["prometheus"], "--once", "--interval", "0.2"]) == 0
    out = capsys.readouterr().out
    assert row(out, "LockedMap")[2] == f"{serve_maps.expected()['entries']:,}"
    assert "hot keys: not served by this endpoint" in out


def test_unreachable_endpoint_fails_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    assert main(["top", "--url", url, "--once", "--interval", "0.1"]) == 1
    assert f"safemap top: cannot read {url}" in capsys.readouterr().err


@pytest.mark.parametrize("interval", ["0", "-1", "nan"])
def test_interval_must_be_positive(interval: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["top", "--url", "http://127.0.0.1:1/metrics", "--once", "--interval", interval])
    assert exited.value.code == 2
    assert "--interval" in capsys.readouterr().err


def test_rates_between_two_reads() -> None:
    earlier = {"a": MapView(ops=100), "gone": MapView(ops=5)}
    later = {"a": MapView(ops=300), "new": MapView(ops=7)}
    assert rates(earlier, later, 2.0) == {"a": 100.0, "new": None}


def test_parse_sums_shards_and_reads_hits() -> None:
    text = (
        'safemap_map_info{map="m",kind="ConcurrentMap"} 1\n'
        'safemap_operations_total{map="m",op="read",result="hit"} 3\n'
        'safemap_operations_total{map="m",op="read",result="miss"} 1\n'
        'safemap_operations_total{map="m",op="write",result="insert"} 2\n'
        'safemap_lock_acquisitions_total{map="m",shard="0"} 4\n'
        'safemap_lock_acquisitions_total{map="m",shard="1"} 6\n'
        'safemap_lock_contentions_total{map="m",shard="1"} 2\n'
        'safemap_mailbox_utilization{map="m"} 0.5\n'
        'safemap_mailbox_breaker_state{map="m",state="open"} 0\n'
    )
    view = parse(text)["m"]
    assert (view.kind, view.ops, view.hits, view.misses) == ("ConcurrentMap", 6, 3, 1)
    assert (view.acquisitions, view.contentions) == (10, 2)
    assert view.mailbox == {"utilization": 0.5}


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.timeout(120)
def test_live_view_refreshes_in_place_until_interrupted(served: dict[str, str]) -> None:
    """On a terminal, frames are redrawn over the previous one (cursor up, erase line),
    and Ctrl-C ends the view with status 0."""
    import pty
    import select
    import signal

    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS="200", LINES="50", TERM="xterm-256color")
    process = subprocess.Popen(
        [sys.executable, "-m", "safemap", "top", "--url", served["metrics"], "--interval", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    seen = b""
    try:
        while seen.count(b"safemap top:") < 3:  # three frames drawn
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no new frame within 60 s; so far:\n{seen.decode(errors='replace')}"
            try:
                seen += os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        os.close(master)
    assert seen.count(b"safemap top:") >= 3
    assert b"\x1b[2K" in seen  # lines erased: redrawn in place, not appended
    assert b"LockedMap" in seen
