"""``safemap top``: a live terminal view of the maps a running process exports.

It reads the process's Prometheus endpoint (``--url``, served by
``safemap.metrics.serve()`` or by prometheus_client's own server) twice per refresh and
shows per map: the operations per second between the two reads, and, since the map was
made, the hit ratio, the share of lock acquisitions that waited and the time they waited,
the writes made during an iteration, the entries and an actor map's mailbox. Hot keys come
from the JSON side endpoint of ``safemap.metrics.serve()`` (never from Prometheus labels);
with another server there are none.

Nothing heavy is imported until the subcommand runs (``safemap[top]``: rich and
prometheus_client).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .bench import _positive_float

__all__ = ["MapView", "add_parser", "parse", "rates", "run"]

_EXTRA = "safemap top needs the 'top' extra: pip install 'safemap[top]'"
_TIMEOUT = 10.0  # seconds for one HTTP read


def add_parser(sub: Any) -> None:
    """Register ``top`` on the ``safemap`` command's subparsers."""
    p = sub.add_parser(
        "top",
        help="live view of the maps of a running process (its /metrics endpoint)",
        description=(
            "Show every map a running process exports with safemap.metrics: ops/s, hit "
            "ratio, entries, lock contention, writes during iteration, actor mailboxes and "
            "hot keys, refreshed in place (Ctrl-C stops)."
        ),
    )
    p.add_argument("--url", required=True, help="the Prometheus endpoint, http://HOST:PORT/metrics")
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        help="seconds between refreshes, and between the two reads of --once (default 2)",
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--hot-keys-url",
        help="where the hot keys are served as JSON (default: the path "
        "safemap.metrics.serve() uses, on --url's host and port)",
    )
    p.add_argument("--keys", type=int, default=5, help="hot keys shown per map (default 5)")


@dataclass
class MapView:
    """One map in one read of the endpoint."""

    kind: str = "?"
    ops: float = 0.0
    hits: float = 0.0
    misses: float = 0.0
    entries: float = 0.0
    acquisitions: float = 0.0
    contentions: float = 0.0
    wait_seconds: float = 0.0
    writes_during_iteration: float = 0.0
    mailbox: dict[str, float] = field(default_factory=dict)


def parse(text: str) -> dict[str, MapView]:
    """The maps in one Prometheus exposition, by their ``map`` label."""
    from prometheus_client.parser import text_string_to_metric_families

    maps: dict[str, MapView] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name
            if not name.startswith("safemap_") or "map" not in s.labels:
                continue
            view = maps.setdefault(s.labels["map"], MapView())
            if name == "safemap_map_info":
                view.kind = s.labels.get("kind", "?")
            elif name == "safemap_operations_total":
                view.ops += s.value
                if s.labels.get("result") == "hit":
                    view.hits += s.value
                elif s.labels.get("result") == "miss":
                    view.misses += s.value
            elif name == "safemap_entries":
                view.entries = s.value
            elif name == "safemap_lock_acquisitions_total":
                view.acquisitions += s.value
            elif name == "safemap_lock_contentions_total":
                view.contentions += s.value
            elif name == "safemap_lock_wait_seconds_total":
                view.wait_seconds += s.value
            elif name == "safemap_writes_during_iteration_total":
                view.writes_during_iteration = s.value
            elif name.startswith("safemap_mailbox_") and "state" not in s.labels:
                view.mailbox[name.removeprefix("safemap_mailbox_")] = s.value
    return maps


def rates(
    earlier: Mapping[str, MapView], later: Mapping[str, MapView], seconds: float
) -> dict[str, float | None]:
    """Operations per second of each map of ``later`` between the two reads (``None`` for
    a map the earlier read did not have)."""
    out: dict[str, float | None] = {}
    for name, view in later.items():
        before = earlier.get(name)
        out[name] = None if before is None else max(view.ops - before.ops, 0.0) / seconds
    return out


def _read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
        return response.read()  # type: ignore[no-any-return]


def _hot_keys(url: str) -> dict[str, list[tuple[str, int]]] | None:
    """The hot keys per map, or ``None`` when ``url`` serves none (another server)."""
    try:
        document = json.loads(_read(url))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return {
        name: [(str(key), int(count)) for key, count in entry.get("hot_keys", [])]
        for name, entry in document.get("maps", {}).items()
    }


def _default_hot_keys_url(url: str) -> str:
    from ..metrics._server import HOT_KEYS_PATH

    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, HOT_KEYS_PATH, "", ""))


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def render(
    url: str,
    later: Mapping[str, MapView],
    ops: Mapping[str, float | None],
    hot: Mapping[str, list[tuple[str, int]]] | None,
    keys: int,
) -> Any:
    """One frame: the maps table, then the hot keys."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"safemap top: {url}", title_justify="left")
    for heading in ("map", "kind", "entries", "ops/s", "hit %", "contended", "lock wait s"):
        table.add_column(heading, justify="left" if heading in ("map", "kind") else "right")
    table.add_column("writes in iter", justify="right")
    table.add_column("mailbox", justify="right")
    for name, v in sorted(later.items()):
        rate = ops.get(name)
        box = v.mailbox
        mailbox = "-"
        if box:
            mailbox = (
                f"{box.get('depth', 0):.0f}/{box.get('capacity', 0):.0f} "
                f"({100 * box.get('utilization', 0):.0f}%)"
            )
            if box.get("timeouts"):
                mailbox += f", {box['timeouts']:,.0f} timeouts"
        table.add_row(
            name,
            v.kind,
            f"{v.entries:,.0f}",
            "-" if rate is None else f"{rate:,.1f}",
            _percent(v.hits, v.hits + v.misses),
            _percent(v.contentions, v.acquisitions),
            f"{v.wait_seconds:.3f}",
            f"{v.writes_during_iteration:,.0f}",
            mailbox,
        )
    parts: list[Any] = [table]
    if hot is None:
        parts.append(Text("hot keys: not served by this endpoint (safemap.metrics.serve() does)"))
    else:
        hot_table = Table(title="hot keys (m.track(hot_keys=k))", title_justify="left")
        for heading in ("map", "key", "count"):
            hot_table.add_column(heading, justify="right" if heading == "count" else "left")
        for name, listed in sorted(hot.items()):
            for key, count in listed[:keys]:
                hot_table.add_row(name, key, f"{count:,}")
        if hot_table.row_count:
            parts.append(hot_table)
        else:
            parts.append(Text("hot keys: none tracked"))
    return Group(*parts)


def run(args: Any) -> int:
    """Run ``safemap top`` with parsed arguments; 0 on success, 1 if the endpoint fails."""
    try:
        import prometheus_client  # noqa: F401
        import rich  # noqa: F401
    except ImportError:
        print(_EXTRA, file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.live import Live

    hot_url = args.hot_keys_url or _default_hot_keys_url(args.url)

    def read() -> tuple[dict[str, MapView], float]:
        return parse(_read(args.url).decode()), time.monotonic()

    def frame(earlier: dict[str, MapView], then: float) -> tuple[Any, dict[str, MapView], float]:
        later, now = read()
        ops = rates(earlier, later, max(now - then, 1e-9))
        return render(args.url, later, ops, _hot_keys(hot_url), args.keys), later, now

    console = Console()
    try:
        earlier, then = read()
        time.sleep(args.interval)
        view, earlier, then = frame(earlier, then)
        if args.once:
            console.print(view)
            return 0
        with Live(view, console=console, auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                view, earlier, then = frame(earlier, then)
                live.update(view, refresh=True)
    except KeyboardInterrupt:
        return 0
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"safemap top: cannot read {args.url}: {exc}", file=sys.stderr)
        return 1
