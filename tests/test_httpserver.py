"""The stdlib HTTP/1.1 server against hostile and buggy clients, over real sockets.

Each test runs an :class:`HttpServer` with a tiny echo handler on loopback and talks
raw bytes to it: oversized and malformed heads, a client too slow to send its head,
more connections than the cap, pipelined and kept-alive requests. Short timeouts are
set through :class:`Limits` so that no test sleeps; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from supervisord_lite import log
from supervisord_lite.httpserver import HttpServer, Limits, Request, Response

DEADLINE = 30.0  # generous: only stops a hung test


BIG = 8 * 1024 * 1024  # far more than the socket buffers on both sides hold


async def echo(request: Request) -> Response:
    if request.path == "/big":
        return Response(200, b"x" * BIG)
    body = json.dumps({"method": request.method, "path": request.path, "query": request.query})
    return Response(200, body.encode(), {"Content-Type": "application/json"})


def refusal(status: int, reason: str) -> Response:
    return Response(status, json.dumps({"error": reason}).encode(), {"X-Refused": "1"})


@contextlib.asynccontextmanager
async def serving(limits: Limits | None = None) -> AsyncIterator[tuple[HttpServer, int]]:
    server = HttpServer(echo, refusal, limits or Limits())
    await server.start_tcp("127.0.0.1", 0)
    try:
        yield server, server.addresses[0][1]
    finally:
        await server.close()


class Conn:
    """One raw client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: (status, lower-cased headers, body)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), DEADLINE)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        length = 0 if head_only else int(headers["content-length"])
        body = await asyncio.wait_for(self.reader.readexactly(length), DEADLINE)
        return status, headers, body

    async def closed(self) -> bool:
        """True once the server has closed its side (EOF), reading what is left."""
        rest = await asyncio.wait_for(self.reader.read(), DEADLINE)
        return rest == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (letting the server's tasks run) until ``predicate`` holds, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


GET = b"GET %b HTTP/1.1\r\nHost: t\r\n\r\n"


def test_keep_alive_pipelining_head_and_query() -> None:
    """Three pipelined requests in one write get three answers in order on one
    connection (HEAD without a body); Connection: close ends it after the last."""

    async def main() -> None:
        async with serving() as (_, port):
            c = await Conn.open(port)
            await c.send(
                GET % b"/a?n=50&app=&n=7"
                + b"HEAD /b HTTP/1.1\r\nHost: t\r\n\r\n"
                + b"GET /c%20d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            status, headers, body = await c.response()
            assert status == 200 and headers["connection"] == "keep-alive"
            assert json.loads(body) == {
                "method": "GET",
                "path": "/a",
                "query": {"n": "50", "app": ""},
            }
            status, headers, _ = await c.response(head_only=True)
            assert status == 200 and int(headers["content-length"]) > 0
            status, headers, body = await c.response()
            assert json.loads(body)["path"] == "/c d" and headers["connection"] == "close"
            assert await c.closed()
            await c.close()

    run(main)


def test_http10_closes_unless_asked_to_keep_alive() -> None:
    async def main() -> None:
        async with serving() as (_, port):
            c = await Conn.open(port)
            await c.send(
                b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /y HTTP/1.0\r\n\r\n"
            )
            assert (await c.response())[1]["connection"] == "keep-alive"
            assert (await c.response())[1]["connection"] == "close"
            assert await c.closed()
            await c.close()

    run(main)


def bad(request: bytes, status: int) -> None:
    """``request`` is refused with ``status``, the connection is closed, the refusal is
    logged (without a traceback) and the server still answers a fresh connection."""

    async def main() -> None:
        async with serving() as (_, port):
            with log.capture_logs() as logs:
                c = await Conn.open(port)
                await c.send(request)
                got, headers, _ = await c.response()
                assert (got, headers["connection"], headers["x-refused"]) == (status, "close", "1")
                assert await c.closed()
                await c.close()
            assert [e["status"] for e in logs if e["event"] == "http_bad_request"] == [status]
            assert not any("exc_info" in e for e in logs)
            fresh = await Conn.open(port)
            await fresh.send(GET % b"/ok")
            assert (await fresh.response())[0] == 200
            await fresh.close()

    run(main)


def test_garbage_request_line_is_400() -> None:
    bad(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400)


def test_request_line_without_version_is_400() -> None:
    bad(b"GET /\r\nHost: t\r\n\r\n", 400)


def test_http2_version_is_505() -> None:
    bad(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505)


def test_malformed_header_is_400() -> None:
    bad(b"GET / HTTP/1.1\r\nHost: t\r\n folded: value\r\n\r\n", 400)


def test_oversized_header_is_431() -> None:
    bad(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431)


def test_too_many_headers_is_431() -> None:
    many = b"".join(b"X-%d: 1\r\n" % n for n in range(100))
    bad(b"GET / HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n", 431)


def test_long_request_line_is_414() -> None:
    bad(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414)


def test_large_body_is_413() -> None:
    bad(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000, 413)


def test_chunked_body_is_501() -> None:
    bad(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501)


def test_small_body_is_dropped_and_the_connection_kept() -> None:
    async def main() -> None:
        async with serving() as (_, port):
            c = await Conn.open(port)
            await c.send(
                b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" + GET % b"/q"
            )
            assert json.loads((await c.response())[2])["method"] == "POST"
            assert json.loads((await c.response())[2])["path"] == "/q"
            await c.close()

    run(main)


def test_slow_client_is_timed_out_with_408() -> None:
    """A head that does not arrive within read_timeout is answered 408 and closed
    (slowloris); so is a new connection that sends nothing, however long keep-alive is."""

    async def main() -> None:
        async with serving(Limits(read_timeout=0.2, keepalive_timeout=600)) as (server, port):
            slow = await Conn.open(port)
            await slow.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            status, headers, _ = await slow.response()
            assert (status, headers["connection"]) == (408, "close")
            assert await slow.closed()
            silent = await Conn.open(port)
            assert await silent.closed()  # within DEADLINE, long before keep-alive's 600 s
            await slow.close()
            await silent.close()
            await until(lambda: not server.connections, "the connections to be gone")

    run(main)


def test_idle_kept_alive_connection_is_closed_silently() -> None:
    """After a response, a connection idle for keepalive_timeout is closed without a
    word (no 408: the client sent nothing), however long read_timeout is."""

    async def main() -> None:
        async with serving(Limits(read_timeout=600, keepalive_timeout=0.2)) as (_, port):
            c = await Conn.open(port)
            await c.send(GET % b"/once")
            assert (await c.response())[0] == 200
            assert await c.closed()  # EOF and nothing before it
            await c.close()

    run(main)


def test_connections_over_the_cap_get_503_and_the_cap_frees_up() -> None:
    async def main() -> None:
        async with serving(Limits(max_connections=5)) as (server, port):
            held = [await Conn.open(port) for _ in range(5)]
            for c in held:  # a round trip each: all five are accepted and kept
                await c.send(GET % b"/held")
                assert (await c.response())[0] == 200
            extra = await Conn.open(port)
            status, headers, _ = await extra.response()
            assert (status, headers["connection"]) == (503, "close")
            assert await extra.closed()
            await extra.close()
            await held.pop().close()
            # the server sees the close on its next read
            await until(lambda: len(server.connections) < 5, "a free connection slot")
            fresh = await Conn.open(port)
            await fresh.send(GET % b"/fresh")
            assert (await fresh.response())[0] == 200
            for c in [*held, fresh]:
                await c.close()

    run(main)


def test_a_client_that_stops_reading_is_dropped_after_write_timeout() -> None:
    """A response the client does not read is given up (the connection aborted, its
    buffer freed) after write_timeout; the server goes on answering others."""

    async def main() -> None:
        async with serving(Limits(write_timeout=0.2)) as (server, port):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, GET % b"/big")
                await until(lambda: len(server.connections) == 1, "the connection")
                # never read: the server's write cannot finish, until it gives up
                await until(lambda: not server.connections, "the stuck connection dropped")
                other = await Conn.open(port)
                await other.send(GET % b"/small")
                assert (await other.response())[0] == 200
                await other.close()
                received = 0
                with contextlib.suppress(ConnectionResetError):
                    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), DEADLINE):
                        received += len(chunk)
                assert received < BIG  # cut short, not completed
            finally:
                sock.close()

    run(main)
