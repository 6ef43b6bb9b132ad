"""A small HTTP/1.1 server on asyncio streams, for a read-only API (stdlib only).

This module owns the wire: parsing requests, framing responses, keep-alive, and the
limits that keep a hostile or buggy client from costing the daemon more than its own
connection. It knows no routes: a handler maps a :class:`Request` to a
:class:`Response`, and ``error`` renders the server's own refusals (400, 408, 413,
414, 431, 501, 503, 505) in the API's format.

What it does not do, on purpose: request bodies (a body up to ``max_body`` bytes is
read and dropped, a larger one is 413; ``Transfer-Encoding`` is 501), TLS, HTTP/2.
Every refusal closes the connection (after a bad request the framing of the next
one cannot be trusted) and is logged at debug level, never with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote

from .log import get_logger

__all__ = ["HttpServer", "Limits", "Request", "Response"]

log = get_logger("http")

_REASONS: Final = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
# RFC 9110 token characters (method and header names)
_TCHAR: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
# after a refusal, what is still read (and dropped) so that closing does not reset
# the connection before the client has read the answer (a "lingering close")
_LINGER_SECONDS: Final = 1.0
_LINGER_BYTES: Final = 256 * 1024


@dataclass(frozen=True)
class Limits:
    """What one client may cost; the defaults suit monitoring scrapes and a browser."""

    max_line: int = 4096  # request line, and each header line
    max_head: int = 16384  # request line and all headers together
    max_headers: int = 64
    max_body: int = 1024  # read and dropped; larger is 413
    # a request's head (and body) must arrive within this once its first byte has, and
    # a new connection's first byte within this too
    read_timeout: float = 10.0
    # an idle kept-alive connection is closed after this: long enough for a Prometheus
    # scrape interval (15 s by default) to reuse it
    keepalive_timeout: float = 30.0
    # a response the client does not read is dropped (with the connection) after this
    write_timeout: float = 30.0
    max_connections: int = 256
    # on close, in-flight responses get this long before their connections are cut
    shutdown_timeout: float = 1.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]  # first value of each name
    headers: dict[str, str]  # lower-cased names


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # Content-Length is added


Handler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[int, str], Response]


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpServer:
    """Serves ``handler`` on one TCP address (or both wildcards) or one unix socket."""

    def __init__(self, handler: Handler, error: ErrorRenderer, limits: Limits = Limits()) -> None:
        self._handler = handler
        self._error = error
        self.limits = limits
        self._server: asyncio.Server | None = None
        self._unix: tuple[str, tuple[int, int]] | None = None  # path, (st_dev, st_ino)
        self.connections: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.StreamWriter] = set()  # between a request and its response
        self._closing = False
        self._cap_logged = 0.0

    async def start_tcp(self, host: str | None, port: int) -> None:
        self._server = await asyncio.start_server(
            self._connection, host, port, limit=self.limits.max_head, reuse_address=True
        )

    async def start_unix(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(
            self._connection, path, limit=self.limits.max_head
        )
        st = os.stat(path)
        # so close() unlinks only our own socket, never one a newer daemon bound there
        self._unix = (path, (st.st_dev, st.st_ino))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self._server is not None
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def close(self) -> None:
        """Stop listening, let in-flight responses finish briefly, close everything."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing = True
        server.close()
        idle = [w for w in self.connections if w not in self._busy]
        for writer in idle:
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.limits.shutdown_timeout)
        for writer in list(self.connections):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.limits.shutdown_timeout)
        await server.wait_closed()
        unix, self._unix = self._unix, None
        if unix is not None:
            # asyncio (before 3.13) leaves the socket file behind
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(unix[0])
                if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == unix[1]:
                    os.unlink(unix[0])

    # -- one connection --------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing or len(self.connections) >= self.limits.max_connections:
            self._refuse_over_cap(writer)
            return
        # drain() returns only once a response is wholly in the kernel: a connection we
        # end is then closed at once, never kept for a client that stopped reading
        writer.transport.set_write_buffer_limits(high=0)
        self.connections.add(writer)
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stopped reading: its connection only
        except Exception:
            log.exception("http_connection_failed", peer=_peer(writer))
        finally:
            self.connections.discard(writer)
            self._busy.discard(writer)
            self._tasks.discard(task)
            # what is still buffered (a timed-out write) is dropped, not flushed forever
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()
            else:
                writer.close()

    def _refuse_over_cap(self, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        if now - self._cap_logged >= 60.0:  # at most once a minute: a flood is one event
            self._cap_logged = now
            log.warning("http_connections_capped", max_connections=self.limits.max_connections)
        resp = self._error(503, "too many connections")
        writer.write(_head(resp, len(resp.body), keep_alive=False) + resp.body)
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lim = self.limits
        wait = lim.read_timeout  # for a new connection's first byte: no free idle slot
        while not self._closing:
            # a kept-alive connection's next request may take as long as keep-alive
            # allows to begin; once it has, it must arrive within read_timeout
            try:
                async with asyncio.timeout(wait):
                    first = await reader.read(1)
            except TimeoutError:
                return
            if not first:
                return
            try:
                async with asyncio.timeout(lim.read_timeout):
                    request, keep_alive = await self._read_request(first, reader, writer)
            except _BadRequest as exc:
                log.debug("http_bad_request", peer=_peer(writer), status=exc.status, why=exc.reason)
                await self._refuse(reader, writer, exc.status, exc.reason)
                return
            except TimeoutError:
                log.debug("http_request_timeout", peer=_peer(writer))
                await self._refuse(reader, writer, 408, "request not received in time")
                return
            self._busy.add(writer)
            try:
                resp = await self._handler(request)
            except Exception:
                log.exception("http_handler_failed", method=request.method, path=request.path)
                resp = self._error(500, "internal error; see the supervisor's log")
            keep_alive = keep_alive and not self._closing
            head = _head(resp, len(resp.body), keep_alive)
            writer.write(head if request.method == "HEAD" else head + resp.body)
            await self._drain(writer)
            self._busy.discard(writer)
            if not keep_alive:
                return
            wait = lim.keepalive_timeout

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, why: str
    ) -> None:
        resp = self._error(status, why)
        writer.write(_head(resp, len(resp.body), keep_alive=False) + resp.body)
        await self._drain(writer)
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LINGER_SECONDS):
                dropped = 0
                while dropped < _LINGER_BYTES and (chunk := await reader.read(65536)):
                    dropped += len(chunk)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()

    async def _read_request(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[Request, bool]:
        lim = self.limits
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise _BadRequest(431, f"request head over {lim.max_head} bytes") from exc
        except asyncio.IncompleteReadError as exc:
            raise _BadRequest(400, "connection closed inside a request") from exc
        lines = head[:-4].split(b"\r\n")
        if any(b"\n" in line or b"\r" in line or b"\0" in line for line in lines):
            raise _BadRequest(400, "bare CR, LF or NUL in the request head")
        if len(lines[0]) > lim.max_line:
            raise _BadRequest(414, f"request line over {lim.max_line} bytes")
        method, target, version = _request_line(lines[0])
        if len(lines) - 1 > lim.max_headers:
            raise _BadRequest(431, f"more than {lim.max_headers} header fields")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if len(line) > lim.max_line:
                raise _BadRequest(431, f"a header field over {lim.max_line} bytes")
            name, sep, value = line.partition(b":")
            if not sep or not name or not _TCHAR.issuperset(name):
                raise _BadRequest(400, "malformed header field")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            if key in headers:
                if key in ("content-length", "host") and headers[key] != text:
                    raise _BadRequest(400, f"conflicting {key} fields")
                headers[key] = f"{headers[key]}, {text}"
            else:
                headers[key] = text
        if version == "HTTP/1.1" and "host" not in headers:
            raise _BadRequest(400, "HTTP/1.1 request without Host")
        if "transfer-encoding" in headers:
            raise _BadRequest(501, "request bodies with Transfer-Encoding are not supported")
        length_text = headers.get("content-length", "0").split(",")[0].strip()
        if not length_text.isdigit() or not length_text.isascii():
            raise _BadRequest(400, "malformed Content-Length")
        length = int(length_text)
        if length > lim.max_body:
            raise _BadRequest(413, f"request body over {lim.max_body} bytes")
        if length:
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await reader.readexactly(length)  # no route takes a body: dropped
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        path, _, query = target.partition("?")
        request = Request(
            method=method,
            path=unquote(path),
            query={k: v for k, v in reversed(parse_qsl(query, keep_blank_values=True))},
            headers=headers,
        )
        return request, keep_alive


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0] or not _TCHAR.issuperset(parts[0]):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if not version.startswith(b"HTTP/1.") or version not in (b"HTTP/1.0", b"HTTP/1.1"):
        if version.startswith(b"HTTP/") and version[5:6].isdigit():
            raise _BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are served")
        raise _BadRequest(400, "malformed request line")
    if target.startswith((b"http://", b"https://")):  # absolute form: keep the path
        target = b"/" + target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"/"
    if not target.startswith(b"/") or any(c < 0x21 or c > 0x7E for c in target):
        raise _BadRequest(400, "malformed request target")
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")


def _head(resp: Response, length: int, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in resp.headers.items()]
    lines.append(f"Content-Length: {length}")
    lines.append(f"Date: {_date()}")
    # HTTP/1.1 keeps the connection by default; 1.0 clients that asked get the header
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_date_cache: list[tuple[int, str]] = [(0, "")]


def _date() -> str:
    now = int(time.time())
    if _date_cache[0][0] != now:  # one strftime a second, not one a request
        _date_cache[0] = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)))
    return _date_cache[0][1]


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return "unix" if not peer else f"{peer[0]}:{peer[1]}"
