"""``serve()``: an HTTP endpoint with the Prometheus exposition and the hot-keys side
endpoint that ``safemap top`` reads (``safemap[prometheus]``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app

from . import _install, registered

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["HOT_KEYS_PATH", "MetricsServer", "hot_keys_document", "serve"]

HOT_KEYS_PATH = "/safemap/hot-keys.json"
"""Where :func:`serve` answers with the hot keys of every registered map, as JSON."""

_KEY_CHARS = 200  # a key's repr is cut to this many characters


def hot_keys_document() -> dict[str, Any]:
    """``{"maps": {name: {"kind": ..., "hot_keys": [[repr(key), count], ...]}}}`` for every
    registered map; ``hot_keys`` is empty unless ``m.track(hot_keys=k)`` is on."""
    maps: dict[str, Any] = {}
    for name, m in registered().items():
        try:
            stats = m.stats()
        except Exception:  # the collector logs it; here the map is left out
            continue
        keys = [[repr(k)[:_KEY_CHARS], count] for k, count in stats.hot_keys]
        maps[name] = {"kind": stats.kind, "hot_keys": keys}
    return {"maps": maps}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never keeps the program alive


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """A running endpoint (:func:`serve`); ``close()`` (or leaving ``with``) stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port
        """The port it listens on (the one chosen by the system for ``port=0``)."""
        self.url = f"http://{host}:{self.port}/metrics"
        """The Prometheus exposition (any other path but the hot keys' answers it too)."""
        self.hot_keys_url = f"http://{host}:{self.port}{HOT_KEYS_PATH}"
        """The hot keys, as JSON (:func:`hot_keys_document`)."""

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    port: int = 0, addr: str = "127.0.0.1", *, registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default: prometheus_client's ``REGISTRY``, with safemap's
    collector installed) at ``http://addr:port/metrics``, and the registered maps' hot keys
    at :data:`HOT_KEYS_PATH`, from a daemon thread.

    The hot keys are the ``repr`` of real keys (cut to 200 characters): the endpoint listens
    on the loopback interface unless ``addr`` says otherwise, and exposes keys only of maps
    whose hot-key tracking is on.
    """
    registry = REGISTRY if registry is None else registry
    _install(registry)
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == HOT_KEYS_PATH:
            body = json.dumps(hot_keys_document()).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(addr, port, app, server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="safemap-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread, f"[{addr}]" if ":" in addr else addr)
