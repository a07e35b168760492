"""``dmo-search dashboard``: optuna-dashboard plus the mixture pages, behind one small WSGI dispatcher.

``/dmo/`` lists the studies and ``/dmo/<study>`` shows a study's mixture views; every other path goes
to optuna-dashboard's own WSGI app (``/dashboard``, ``/api/studies``, ...), unmodified. The server is
read-only unless started with ``allow_writes``: methods other than GET/HEAD are refused with 405, and
the storage itself refuses writes (:func:`dmo_search.dashboard.storage.open_read_storage`). It binds
to a loopback address unless ``allow_public`` is given.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import quote, unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.storages import RDBStorage

from dmo_search.dashboard.data import UnknownStudyError, list_study_names, load_study_data, with_recommendation
from dmo_search.dashboard.page import index_page, study_page, study_panels
from dmo_search.dashboard.promotions import PromotionsUnavailable, load_promotion_records
from dmo_search.dashboard.storage import open_read_storage

__all__ = ["DashboardApp", "check_host", "make_dashboard_server", "serve_dashboard"]

_log = logging.getLogger("dmo_search")
StartResponse = Callable[..., Any]
_READ_METHODS = ("GET", "HEAD")


def check_host(host: str, *, allow_public: bool) -> bool:
    """Whether ``host`` is a loopback address; a public one needs ``allow_public``.

    Raises:
        ValueError: ``host`` is not loopback and ``allow_public`` is false.
    """
    if host == "localhost":
        return True
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_public:
        raise ValueError(
            f"--host {host} would serve the study DB to the network (the dashboard has no authentication); "
            "pass --allow-public to do so, or keep the default 127.0.0.1"
        )
    return loopback


class DashboardApp:
    """The WSGI app: mixture pages under ``/dmo``, optuna-dashboard everywhere else.

    Args:
        storage: the study DB (read-only unless ``allow_writes``).
        storage_url: its URL (the promotion store is read through it).
        allow_writes: let optuna-dashboard's own write endpoints (notes, tell, delete) through.
            Default False: any method but GET/HEAD gets 405.
    """

    def __init__(self, storage: RDBStorage, storage_url: str, *, allow_writes: bool = False) -> None:
        from dmo_search.quiet_imports import jit_deprecation_hidden

        with jit_deprecation_hidden():  # optuna-dashboard and the BoTorch it imports use torch.jit.script
            import optuna_dashboard

        self.storage = storage
        self.storage_url = storage_url
        self.allow_writes = allow_writes
        self.optuna_app = optuna_dashboard.wsgi(storage)
        self._cache: dict[str, tuple[str, str]] = {}  # study -> (state key, page)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        mine = path == "/dmo" or path.startswith("/dmo/")
        if method not in _READ_METHODS and (mine or not self.allow_writes):
            why = "the mixture pages are read-only" if mine else "this dashboard is read-only (--allow-writes)"
            return _respond(
                start_response,
                "405 Method Not Allowed",
                why + "\n",
                "text/plain",
                [("Allow", ", ".join(_READ_METHODS))],
            )
        if not mine:
            return self.optuna_app(environ, start_response)
        name = unquote(path.removeprefix("/dmo").strip("/"))
        try:
            body = self.study_html(name) if name else index_page(list_study_names(self.storage))
            status = "200 OK"
        except UnknownStudyError as e:
            body, status = str(e) + "\n", "404 Not Found"
        out = _respond(start_response, status, body, "text/html" if status == "200 OK" else "text/plain")
        return [] if method == "HEAD" else out

    def study_html(self, name: str) -> str:
        """The study's mixture page, re-rendered only when its trials or promotions changed."""
        data = load_study_data(self.storage, name, recommend=False)
        error = None
        try:
            promotions = load_promotion_records(self.storage_url, name)
        except PromotionsUnavailable as e:
            promotions, error = [], str(e)
        key = repr((data.trials, promotions, error))
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = with_recommendation(self.storage, data)
        page = study_page(data, study_panels(data, promotions, error), live=True)
        with self._lock:
            self._cache[name] = (key, page)
        return page


def _respond(
    start_response: StartResponse,
    status: str,
    body: str,
    ctype: str = "text/html",
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", f"{ctype}; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            ("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'unsafe-inline'"),
            *(headers or []),
        ],
    )
    return [data]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


@dataclass
class DashboardServer:
    """A started (not yet serving) dashboard server and its URL."""

    server: WSGIServer
    url: str
    app: DashboardApp

    def serve(self) -> None:
        """Serve until Ctrl-C (or :meth:`shutdown` from another thread), then close."""
        try:
            self.server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.server.server_close()
            self.app.storage.engine.dispose()

    def shutdown(self) -> None:
        """Stop :meth:`serve` from another thread."""
        self.server.shutdown()


def make_dashboard_server(
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    allow_public: bool = False,
    allow_writes: bool = False,
) -> DashboardServer:
    """Open the DB and bind the server (port 0 picks a free port).

    Raises:
        ValueError: a non-loopback ``host`` without ``allow_public``, or the port cannot be bound.
        DashboardStorageError: the DB cannot be opened.
    """
    if not check_host(host, allow_public=allow_public):
        print(
            f"[dmo-search] WARNING: serving on {host}:{port}, reachable from the network without authentication",
            file=sys.stderr,
        )
    storage = open_read_storage(storage_url, read_only=not allow_writes)
    app = DashboardApp(storage, storage_url, allow_writes=allow_writes)
    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as e:
        storage.engine.dispose()
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port (0: any free one)") from e
    shown = f"[{host}]" if ":" in host else host
    return DashboardServer(server=server, url=f"http://{shown}:{server.server_port}", app=app)


def serve_dashboard(
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    allow_public: bool = False,
    allow_writes: bool = False,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> None:
    """Serve the dashboard until Ctrl-C, printing its URLs first."""
    srv = make_dashboard_server(storage_url, host=host, port=port, allow_public=allow_public, allow_writes=allow_writes)
    from dmo_search.study import hide_password

    names = list_study_names(srv.app.storage)
    shown = hide_password(storage_url)
    say(f"[dmo-search] dashboard for {shown} ({len(names)} studies){'' if allow_writes else ', read-only'}")
    say(f"[dmo-search] optuna-dashboard: {srv.url}/dashboard")
    say(
        f"[dmo-search] mixture views:    {srv.url}/dmo/"
        + (f"  (e.g. {srv.url}/dmo/{quote(names[0])})" if names else "")
    )
    say("[dmo-search] press Ctrl-C to stop")
    srv.serve()
    say("[dmo-search] dashboard stopped")
