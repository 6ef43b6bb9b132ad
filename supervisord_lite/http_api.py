"""The read-only HTTP API: ``/``, ``/status``, ``/status/APP``, ``/healthz``, ``/events``
and ``/metrics``.

This module owns the routes and the JSON error format of HTTP responses; the wire
(parsing, keep-alive, limits) is :mod:`.httpserver`'s, ``/metrics`` is rendered by
:mod:`.metrics` and the page at ``/`` is :mod:`.status_page`.

The server runs on the supervisor's own event loop, so every handler only calls
the status source (a synchronous snapshot) and serializes it; nothing here blocks,
and a slow client only ever holds up its own connection's task.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from supervisord_lite import config, errors, metrics, model, status_page

from .httpserver import HttpServer, Limits, Request, Response
from .log import get_logger

__all__ = ["HttpApi", "StatusSource"]

StatusSource = Callable[[], model.SupervisorStatus]
# (app or None, how many) -> recorded events, newest first (history.History.recent)
EventSource = Callable[[str | None, int], list[dict[str, Any]]]
_EVENTS_DEFAULT: Final = 50
_EVENTS_MAX: Final = 10_000
_JSON: Final = {"Content-Type": "application/json; charset=utf-8"}
_ALLOWED: Final = "GET, HEAD"

log = get_logger("http_api")

Route = Callable[[Request], Awaitable[Response]]


class HttpApi:
    """Serves the read-only HTTP API on one TCP or unix-socket address."""

    def __init__(
        self,
        listen: config.ListenAddress,
        source: StatusSource,
        events: EventSource | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._listen = listen
        self._source = source
        self._event_source = events
        self._limits = limits or Limits()
        self.server: HttpServer | None = None
        self._routes: dict[str, Route] = {
            "/": self._page,
            "/status": self._status,
            "/healthz": self._healthz,
            "/metrics": self._metrics,
            "/events": self._events,
        }

    async def start(self) -> None:
        """Bind the address and start answering requests."""
        if self.server is not None:
            raise RuntimeError("HttpApi already started")
        server = HttpServer(self._dispatch, _refusal, self._limits)
        if self._listen.path is not None:
            await server.start_unix(self._listen.path)
        else:
            # "[::1]" in the config means the IPv6 host "::1"; "" means every
            # interface, which asyncio spells None.
            await server.start_tcp(self._listen.host.strip("[]") or None, self._listen.port)
        self.server = server
        log.debug("http_api_listening", address=self.bound)  # daemon_started names it too

    async def close(self) -> None:
        """Stop listening and close every connection; safe to call twice."""
        server, self.server = self.server, None
        if server is not None:
            await server.close()

    @property
    def bound(self) -> str:
        """The address actually bound, e.g. ``127.0.0.1:9190`` or ``unix:/run/x.sock``."""
        if self.server is None:
            raise RuntimeError("HttpApi not started")
        if self._listen.path is not None:
            return f"unix:{self._listen.path}"
        names = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.server.addresses]
        # Several sockets only when the host is "" (IPv4 and IPv6 wildcards).
        return ", ".join(names)

    # -- routing ---------------------------------------------------------------------

    async def _dispatch(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None and request.path.startswith("/status/"):
            name = request.path[len("/status/") :]
            if name and "/" not in name:
                route = self._app_status
        if route is None:
            return _error(404, errors.ProtocolError(f"no such path: {request.path}"))
        if request.method not in ("GET", "HEAD"):
            err = errors.ProtocolError(
                f"method {request.method} not allowed on {request.path} (allowed: {_ALLOWED})"
            )
            return _error(405, err, {"Allow": _ALLOWED})
        try:
            return await route(request)
        except Exception:
            # A bug in a status source must not take down the API (or leak a
            # traceback to the client); it is logged here with its traceback.
            log.exception("http_request_failed", method=request.method, path=request.path)
            return _error(500, _Internal("internal error; see the supervisor's log"))

    # -- handlers: each takes one snapshot and serializes it, nothing else ----

    async def _page(self, request: Request) -> Response:
        # A static document: its script reads /status, so no snapshot is taken here.
        return Response(200, status_page.PAGE, dict(status_page.HEADERS))

    async def _status(self, request: Request) -> Response:
        return Response(200, _dumps(self._source().to_json()), dict(_JSON))

    async def _app_status(self, request: Request) -> Response:
        name = request.path[len("/status/") :]
        app = self._source().apps.get(name)
        if app is None:
            return _error(404, errors.NoSuchApp(f"no app named {name!r}"))
        return _json(200, {"name": name, **app.to_json()})

    async def _healthz(self, request: Request) -> Response:
        status = self._source()
        if status.healthy():
            return _json(200, {"healthy": True})
        return _json(503, {"healthy": False, "unhealthy": list(status.unhealthy())})

    async def _events(self, request: Request) -> Response:
        text = request.query.get("n", str(_EVENTS_DEFAULT))
        if not text.isdigit() or not 1 <= int(text) <= _EVENTS_MAX:
            return _error(400, errors.UsageError(f"n must be an integer in 1..{_EVENTS_MAX}"))
        app = request.query.get("app") or None
        found = self._event_source(app, int(text)) if self._event_source else []
        return _json(200, {"events": found})

    async def _metrics(self, request: Request) -> Response:
        # The snapshot is taken here, on the loop; rendering it (~25k samples at 1000
        # instances) runs in a thread so that a scrape never holds up the loop.
        body = await asyncio.to_thread(metrics.render, self._source())
        return Response(200, body, {"Content-Type": metrics.CONTENT_TYPE_METRICS})


# -- JSON responses and errors ------------------------------------------------


# json.dumps's own output (clients compare bytes); snapshots hold no cycles to check
_ENCODER: Final = json.JSONEncoder(check_circular=False)


def _dumps(data: Any) -> bytes:
    return _ENCODER.encode(data).encode()


def _json(status: int, data: Any) -> Response:
    return Response(status, _dumps(data), dict(_JSON))


def _error(
    status: int, error: errors.SupervisorError, headers: dict[str, str] | None = None
) -> Response:
    # The same {"error": {code, message}} shape as the control protocol.
    resp = _json(status, {"error": error.to_wire()})
    resp.headers.update(headers or {})
    return resp


def _refusal(status: int, reason: str) -> Response:
    """What the server answers a request it refuses (bad, too big, too slow, too many)."""
    return _error(status, errors.ProtocolError(reason))


class _Internal(errors.SupervisorError):
    code = errors.ErrorCode.INTERNAL
