"""The read-only HTTP API: ``/status``, ``/status/APP``, ``/healthz`` and ``/metrics``.

This module owns the HTTP server (the only place aiohttp is imported) and the JSON
error format of HTTP responses; ``/metrics`` is rendered by :mod:`.metrics`.

The server runs on the supervisor's own event loop, so every handler only calls
the status source (a cheap, synchronous snapshot) and serializes it; nothing here
blocks, and a slow client only ever holds up its own connection's task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from supervisord_lite import config, errors, metrics, model, status_page

__all__ = ["HttpApi", "StatusSource"]

StatusSource = Callable[[], model.SupervisorStatus]
# (app or None, how many) -> recorded events, newest first (history.History.recent)
EventSource = Callable[[str | None, int], list[dict[str, Any]]]
_EVENTS_DEFAULT: Final = 50
_EVENTS_MAX: Final = 10_000

log = logging.getLogger(__name__)

# Limits for a read-only API reachable by monitoring systems. No handler reads a
# request body, so anything beyond a few bytes is refused outright.
_CLIENT_MAX_SIZE: Final = 1024
# Long enough for a Prometheus scrape interval (15 s by default) to reuse the
# connection, short enough that idle clients do not pile up (aiohttp's default is
# an hour).
_KEEPALIVE_TIMEOUT: Final = 30.0
# Our requests are a request line and a handful of short headers.
_MAX_LINE_SIZE: Final = 4096
_MAX_FIELD_SIZE: Final = 4096
_MAX_HEADERS: Final = 64
# On close, in-flight responses get this long to finish, then as long again to
# be cancelled (aiohttp waits twice): they are snapshots, and a client that
# stopped reading must not delay the supervisor's shutdown (default: a minute).
_SHUTDOWN_TIMEOUT: Final = 1.0


class HttpApi:
    """Serves the read-only HTTP API on one TCP or unix-socket address."""

    def __init__(
        self,
        listen: config.ListenAddress,
        source: StatusSource,
        events: EventSource | None = None,
    ) -> None:
        self._listen = listen
        self._source = source
        self._event_source = events
        self._runner: web.AppRunner | None = None
        # (st_dev, st_ino) of the unix socket we bound, so close() only unlinks
        # our own socket and never one a newer daemon has bound at the same path.
        self._unix_inode: tuple[int, int] | None = None

    async def start(self) -> None:
        """Bind the address and start answering requests."""
        if self._runner is not None:
            raise RuntimeError("HttpApi already started")
        app = web.Application(
            client_max_size=_CLIENT_MAX_SIZE,
            middlewares=[_json_errors],
            handler_args={
                "max_line_size": _MAX_LINE_SIZE,
                "max_field_size": _MAX_FIELD_SIZE,
                "max_headers": _MAX_HEADERS,
            },
        )
        # add_get also answers HEAD; every other method gets a JSON 405.
        app.router.add_get("/", self._page)
        app.router.add_get("/status", self._status)
        app.router.add_get("/status/{app}", self._app_status)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/events", self._events)
        runner = web.AppRunner(
            app,
            # The supervisor logs what it does, not every scrape of /metrics.
            access_log=None,
            keepalive_timeout=_KEEPALIVE_TIMEOUT,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        site: web.BaseSite
        try:
            if self._listen.path is not None:
                site = web.UnixSite(runner, self._listen.path)
                await site.start()
                st = os.stat(self._listen.path)
                self._unix_inode = (st.st_dev, st.st_ino)
            else:
                # "[::1]" in the config means the IPv6 host "::1"; "" means every
                # interface, which aiohttp spells None.
                host = self._listen.host.strip("[]") or None
                site = web.TCPSite(runner, host, self._listen.port)
                await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("http api listening on %s", self.bound)

    async def close(self) -> None:
        """Stop listening and close every connection; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        path, inode, self._unix_inode = self._listen.path, self._unix_inode, None
        if path is not None and inode is not None:
            # asyncio (before 3.13) leaves the socket file behind.
            try:
                st = os.stat(path)
                if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == inode:
                    os.unlink(path)
            except FileNotFoundError:
                pass

    @property
    def bound(self) -> str:
        """The address actually bound, e.g. ``127.0.0.1:9190`` or ``unix:/run/x.sock``."""
        if self._runner is None:
            raise RuntimeError("HttpApi not started")
        if self._listen.path is not None:
            return f"unix:{self._listen.path}"
        names: list[str] = []
        for addr in self._runner.addresses:
            host, port = addr[0], addr[1]
            names.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        # Several sockets only when the host is "" (IPv4 and IPv6 wildcards).
        return ", ".join(names)

    # -- handlers: each takes one snapshot and serializes it, nothing else ----

    async def _page(self, request: web.Request) -> web.StreamResponse:
        # A static document: its script reads /status, so no snapshot is taken here.
        return web.Response(body=status_page.PAGE, headers=status_page.HEADERS)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self._source().to_json())

    async def _app_status(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["app"]
        app = self._source().apps.get(name)
        if app is None:
            return _error(404, errors.NoSuchApp(f"no app named {name!r}"))
        return _json(200, {"name": name, **app.to_json()})

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        status = self._source()
        if status.healthy():
            return _json(200, {"healthy": True})
        return _json(503, {"healthy": False, "unhealthy": list(status.unhealthy())})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        text = request.query.get("n", str(_EVENTS_DEFAULT))
        if not text.isdigit() or not 1 <= int(text) <= _EVENTS_MAX:
            return _error(400, errors.UsageError(f"n must be an integer in 1..{_EVENTS_MAX}"))
        app = request.query.get("app") or None
        found = self._event_source(app, int(text)) if self._event_source else []
        return _json(200, {"events": found})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        # The snapshot is taken here, on the loop; rendering it (prometheus_client:
        # ~25k samples, a few hundred ms at 1000 instances) runs in a thread so that
        # a scrape never holds up the supervisor's loop.
        body = await asyncio.to_thread(metrics.render, self._source())
        # Set the header verbatim: aiohttp's content_type/charset split would
        # drop the "version" parameter Prometheus uses to pick the parser.
        headers = {"Content-Type": metrics.CONTENT_TYPE_METRICS}
        return web.Response(body=body, headers=headers)


# -- JSON responses and errors ------------------------------------------------


def _json(status: int, data: Any) -> web.Response:
    return web.json_response(data, status=status, dumps=json.dumps)


def _error(
    status: int, error: errors.SupervisorError, headers: dict[str, str] | None = None
) -> web.Response:
    # The same {"error": {code, message}} shape as the control protocol.
    resp = _json(status, {"error": error.to_wire()})
    if headers:
        resp.headers.update(headers)
    return resp


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Replace aiohttp's HTML error pages (404, 405, 500) with JSON errors."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        err = errors.ProtocolError(
            f"method {request.method} not allowed on {request.path} (allowed: {allowed})"
        )
        return _error(405, err, {"Allow": allowed})
    except web.HTTPNotFound:
        return _error(404, errors.ProtocolError(f"no such path: {request.path}"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, errors.ProtocolError(exc.reason))
    except Exception:
        # A bug in a status source must not take down the API (or leak a
        # traceback to the client); it is logged here with its traceback.
        log.exception("http api: %s %s failed", request.method, request.path)
        return _error(500, _Internal("internal error; see the supervisor's log"))


class _Internal(errors.SupervisorError):
    code = errors.ErrorCode.INTERNAL
