"""The read-only HTTP API: ``/``, ``/status``, ``/status/APP``, ``/healthz``, ``/events``
and ``/metrics``, served by aiohttp (the package's only aiohttp import).

Owns the routes, the JSON error format of HTTP responses and the limits a client is
held to. The wire (parsing, framing, keep-alive) is aiohttp's: an ``Application`` with
one catch-all route, an ``AppRunner`` for its connections and their graceful shutdown,
and aiohttp's ``max_line_size``, ``max_field_size``, ``max_headers``,
``client_max_size`` and ``keepalive_timeout``. Connections are accepted by
:class:`os_accept.Listener` (asyncio's accept loop, under a ``TCPSite``, spins when
the daemon is out of descriptors) and handed to aiohttp by ``connect_accepted_socket``.

Added to aiohttp here: JSON for its own refusals (logged at debug level, no traceback),
a connection cap (503), deadlines for a request body and for writing a response,
routing on the path as sent (``/%73tatus`` is not ``/status``), one value per ``Host``
field and the ``Host`` policy of :mod:`.http_hosts`. Handlers only take a snapshot
from the status source and serialize it (``/metrics`` in a thread): nothing blocks the
supervisor's loop, and a slow client only holds up its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web, web_protocol

from supervisord_lite import errors, snapshots
from supervisord_lite.httpapi import metrics, page

from ..config.values import ListenAddress
from ..host.accepting import Listener, refuse
from ..host.fds import bind_listener
from ..log import get_logger
from .hosts import HostPolicy

__all__ = ["HttpApi", "Limits", "StatusSource"]

StatusSource = Callable[[], snapshots.SupervisorStatus]
# (app or None, how many) -> recorded events, newest first (history.History.recent)
EventSource = Callable[[str | None, int], list[dict[str, Any]]]
_EVENTS_DEFAULT: Final = 50
_EVENTS_MAX: Final = 10_000
_JSON: Final = {"Content-Type": "application/json; charset=utf-8"}
# instead of aiohttp's own, which names the Python and aiohttp versions to any client
_SERVER: Final = {"Server": "supervisord-lite"}
_ALLOWED: Final = "GET, HEAD"

log = get_logger("http_api")

Route = Callable[[web.Request], Awaitable[web.Response]]


@dataclass(frozen=True)
class Limits:
    """What one client may cost; the defaults suit monitoring scrapes and a browser."""

    max_line: int = 4096  # the request line, and each header field (aiohttp's max_*_size)
    max_headers: int = 64
    max_body: int = 1024  # read and dropped (no route takes one); larger is 413
    # a request body must arrive within this once its head has
    read_timeout: float = 10.0
    # a new connection's first request, and an idle kept-alive connection's next one,
    # must arrive within this: long enough for a Prometheus scrape interval (15 s by
    # default) to reuse its connection
    keepalive_timeout: float = 30.0
    # a response the client does not read is dropped (with the connection) after this
    write_timeout: float = 30.0
    max_connections: int = 256
    # on close, in-flight responses get this long before their connections are cut
    shutdown_timeout: float = 1.0


class HttpApi:
    """Serves the read-only HTTP API on one TCP or unix-socket address."""

    def __init__(
        self,
        listen: ListenAddress,
        source: StatusSource,
        events: EventSource | None = None,
        limits: Limits | None = None,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self._listen = listen
        self._source = source
        self._event_source = events
        self.limits = limits or Limits()
        self._hosts = HostPolicy.of(listen.host, allowed_hosts, unix=listen.path is not None)
        self._page = page.page()  # read at start: a broken install fails here
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._listener: Listener | None = None
        self._unix_identity: tuple[int, int] | None = None  # (st_dev, st_ino) we bound
        self._connecting: set[asyncio.Task[Any]] = set()
        self._cap_logged = -60.0
        self._routes: dict[str, Route] = {
            "/": self._root,
            "/status": self._status,
            "/healthz": self._healthz,
            "/metrics": self._metrics,
            "/events": self._events,
        }

    def bind(self) -> None:
        """Bind the address (connections wait in its backlog until :meth:`start`);
        :class:`errors.OperationFailed` naming it when it cannot be bound."""
        try:
            self._sock = bind_listener(self._listen, backlog=self.limits.max_connections)
        except OSError as exc:
            raise errors.OperationFailed(
                f"cannot serve HTTP on {self._listen.address}: {exc.strerror or exc}"
            ) from None
        if self._listen.path is not None:
            st = os.stat(self._listen.path)
            # so close() unlinks only our own socket, never one a newer daemon bound there
            self._unix_identity = (st.st_dev, st.st_ino)

    async def start(self) -> None:
        """Bind the address (unless :meth:`bind` did) and start answering requests."""
        if self._runner is not None:
            raise RuntimeError("HttpApi already started")
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        app = web.Application(client_max_size=self.limits.max_body)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.limits.shutdown_timeout,
        )
        await runner.setup()
        self._runner = runner
        no_fd = _refusal_bytes(503, "the server is out of file descriptors; try again")
        self._listener = Listener(self._sock, "http", self._accepted, no_fd)
        self._listener.start()
        log.debug("http_api_listening", address=self.bound)  # daemon_started names it too

    async def close(self) -> None:
        """Stop listening and close every connection; safe to call twice."""
        listener, self._listener = self._listener, None
        runner, self._runner = self._runner, None
        if listener is not None:
            listener.close()
        elif self._sock is not None:
            self._sock.close()  # bound, never started
        self._sock = None
        for task in list(self._connecting):
            task.cancel()
        if runner is not None:
            await runner.cleanup()
        identity, self._unix_identity = self._unix_identity, None
        if identity is not None and self._listen.path is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(self._listen.path)
                if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == identity:
                    os.unlink(self._listen.path)

    @property
    def bound(self) -> str:
        """The address actually bound, e.g. ``127.0.0.1:9190`` or ``unix:/run/x.sock``."""
        if self._listener is None:
            raise RuntimeError("HttpApi not started")
        if self._listen.path is not None:
            return f"unix:{self._listen.path}"
        host, port = self._listener.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def connections(self) -> list[asyncio.Transport]:
        """The transports of the connections being served (for tests)."""
        server = self._runner.server if self._runner is not None else None
        if server is None:
            return []
        return [t for h in server.connections if (t := h.transport) is not None]

    # -- connections -----------------------------------------------------------------

    def _accepted(self, conn: socket.socket) -> None:
        server = self._runner.server if self._runner is not None else None
        cap = self.limits.max_connections
        if server is None or len(server.connections) + len(self._connecting) >= cap:
            now = time.monotonic()
            if now - self._cap_logged >= 60.0:  # at most once a minute: a flood is one event
                self._cap_logged = now
                log.warning("http_connections_capped", max_connections=cap)
            refuse(conn, _refusal_bytes(503, "too many connections"))
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._connect(loop, server, conn))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, server: web.Server, conn: socket.socket
    ) -> None:
        lim = self.limits
        try:
            await loop.connect_accepted_socket(
                lambda: _Protocol(
                    server,
                    loop=loop,
                    keepalive_timeout=lim.keepalive_timeout,
                    max_line_size=lim.max_line,
                    max_field_size=lim.max_line,
                    max_headers=lim.max_headers,
                    # after a refusal, what is still sent is read (and dropped) this
                    # long, so that closing does not reset the connection before the
                    # client has read the answer (a "lingering close")
                    lingering_time=1.0,
                    access_log=None,  # type: ignore[arg-type]  # None: no access log
                ),
                sock=conn,
            )
        except BaseException:
            conn.close()
            raise

    # -- routing ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.version not in ((1, 0), (1, 1)) and request.transport is not None:
            # aiohttp answers in the request's version ("HTTP/2.0 200"): refuse in 1.1
            log.debug("http_bad_request", status=505, why=f"HTTP/{request.version}")
            request.transport.write(_refusal_bytes(505, "only HTTP/1.0 and HTTP/1.1 are served"))
            request.transport.close()
            return _refused(505, "")  # not sent: the connection is closing
        resp = await self._answer(request)
        # Written here rather than by aiohttp, under a deadline: a client that does not
        # read its response must not hold the connection (and the response) forever.
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await resp.prepare(request)
                await resp.write_eof()
        except TimeoutError:
            log.debug("http_write_timeout", path=request.rel_url.raw_path)
            if request.transport is not None:
                request.transport.abort()
        return resp

    async def _answer(self, request: web.Request) -> web.Response:
        local = request.transport.get_extra_info("sockname") if request.transport else None
        hosts = request.headers.getall("Host", [])
        refused = self._hosts.refusal(hosts, request.version < (1, 1), local)
        if refused is not None:
            return _refused(*refused)
        if request.body_exists:
            too_big = _refused(413, f"request body over {self.limits.max_body} bytes")
            if (request.content_length or 0) > self.limits.max_body:
                return too_big
            try:
                async with asyncio.timeout(self.limits.read_timeout):
                    await request.read()  # no route takes a body: read (bounded) and dropped
            except web.HTTPRequestEntityTooLarge:
                return too_big
            except TimeoutError:
                return _refused(408, "request body not received in time")
            except ConnectionError:
                return _refused(400, "connection closed inside the request body")
        path = request.rel_url.raw_path  # as sent: routed without percent-decoding
        route = self._routes.get(path)
        if route is None and path.startswith("/status/"):
            name = path[len("/status/") :]
            if name and "/" not in name:
                route = self._app_status
        if route is None:
            return _error(404, errors.ProtocolError(f"no such path: {path}"))
        if request.method not in ("GET", "HEAD"):
            err = errors.ProtocolError(
                f"method {request.method} not allowed on {path} (allowed: {_ALLOWED})"
            )
            return _error(405, err, {"Allow": _ALLOWED})
        try:
            return await route(request)
        except Exception:  # a bug in a status source: logged, and no traceback sent
            log.exception("http_request_failed", method=request.method, path=path)
            return _error(500, _Internal("internal error; see the supervisor's log"))

    # -- handlers: each takes one snapshot and serializes it, nothing else ----

    async def _root(self, request: web.Request) -> web.Response:  # a static page
        return web.Response(body=self._page.body, headers={**self._page.headers, **_SERVER})

    async def _status(self, request: web.Request) -> web.Response:
        return _json(200, self._source().to_json())

    async def _app_status(self, request: web.Request) -> web.Response:
        name = request.rel_url.raw_path[len("/status/") :]
        app = self._source().apps.get(name)
        if app is None:
            return _error(404, errors.NoSuchApp(f"no app named {name!r}"))
        return _json(200, {"name": name, **app.to_json()})

    async def _healthz(self, request: web.Request) -> web.Response:
        status = self._source()
        if status.healthy():
            return _json(200, {"healthy": True})
        return _json(503, {"healthy": False, "unhealthy": list(status.unhealthy())})

    async def _events(self, request: web.Request) -> web.Response:
        text = request.query.get("n", str(_EVENTS_DEFAULT))
        # isascii: str.isdigit() holds for "²", which int() refuses
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _EVENTS_MAX:
            return _error(400, errors.UsageError(f"n must be an integer in 1..{_EVENTS_MAX}"))
        app = request.query.get("app") or None
        found = self._event_source(app, int(text)) if self._event_source else []
        return _json(200, {"events": found})

    async def _metrics(self, request: web.Request) -> web.Response:
        # the snapshot on the loop, its rendering (~25k samples at 1000 instances) not
        body = await asyncio.to_thread(metrics.render, self._source())
        headers = {"Content-Type": metrics.CONTENT_TYPE_METRICS, **_SERVER}
        return web.Response(body=body, headers=headers)


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's connection handler, with the API's JSON for aiohttp's own refusals and
    a write buffer that makes a drain wait until a response is wholly in the kernel
    (so the write deadline covers all of it)."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.set_write_buffer_limits(high=0)
        super().connection_made(transport)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):
            log.debug("http_client_gone", error=str(exc))
            resp = _refused(400, "connection closed")
        elif status >= 500:
            log.error("http_internal_error", status=status, error=repr(exc))
            resp = _error(status, _Internal("internal error; see the supervisor's log"))
            resp.force_close()
        else:
            # aiohttp's reason, its first line (the rest quotes the request's bytes)
            why = (message or str(exc or "") or "bad request").strip().splitlines()[0]
            log.debug("http_bad_request", status=status, why=why)
            resp = _refused(status, why)
        return resp


# -- JSON responses and errors ------------------------------------------------

# json.dumps's own output (clients compare bytes); snapshots hold no cycles to check
_ENCODER: Final = json.JSONEncoder(check_circular=False)


def _dumps(data: Any) -> bytes:
    return _ENCODER.encode(data).encode()


def _json(status: int, data: Any) -> web.Response:
    return web.Response(status=status, body=_dumps(data), headers={**_JSON, **_SERVER})


def _error(
    status: int, error: errors.SupervisorError, headers: dict[str, str] | None = None
) -> web.Response:
    # The same {"error": {code, message}} shape as the control protocol.
    resp = _json(status, {"error": error.to_wire()})
    resp.headers.update(headers or {})
    return resp


def _refused(status: int, reason: str) -> web.Response:
    """A request refused before any route (bad, too big, too slow): its connection is
    closed, since the framing of what follows cannot be trusted."""
    resp = _error(status, errors.ProtocolError(reason), {"Connection": "close"})
    resp.force_close()
    return resp


def _refusal_bytes(status: int, reason: str) -> bytes:
    """A whole response written straight to the socket, where aiohttp cannot answer:
    a connection refused before aiohttp sees it (over the cap, no descriptor free) or
    a request in an HTTP version it would answer in (2.0, 0.9)."""
    body = _dumps({"error": errors.ProtocolError(reason).to_wire()})
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in {**_JSON, "Connection": "close"}.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Internal(errors.SupervisorError):
    code = errors.ErrorCode.INTERNAL
