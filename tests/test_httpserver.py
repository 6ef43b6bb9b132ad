"""The HTTP API's wire (aiohttp, and the limits and checks around it) against hostile and
buggy clients, over real sockets.

Each test runs an :class:`HttpApi` on loopback and talks raw bytes to it: oversized and
malformed heads, request smuggling attempts (lists in ``Content-Length`` and ``Host``),
foreign ``Host`` names (DNS rebinding), a client too slow to send its head or to read
its answer, more connections than the cap, pipelined and kept-alive requests. Short
timeouts are set through :class:`Limits` so that no test sleeps; every wait has a
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until_async

from supervisord_lite import log, snapshots
from supervisord_lite.config.parser import parse_config
from supervisord_lite.config.values import ListenAddress
from supervisord_lite.errors import ConfigError
from supervisord_lite.httpapi.server import HttpApi, Limits

DEADLINE = 30.0  # generous: only stops a hung test
BIG = 8 * 1024 * 1024  # far more than the socket buffers on both sides hold
LOOPBACK = ListenAddress("127.0.0.1:0", "127.0.0.1", 0)


def status(config: str = "/etc/sl.yaml") -> snapshots.SupervisorStatus:
    """A status with no apps (healthy); ``config`` makes /status as long as needed."""
    info = snapshots.SupervisorInfo(
        pid=1, version="0.1.0", uptime_s=1.0, state="running", config=config
    )
    return snapshots.SupervisorStatus(supervisor=info, apps={})


def echo_events(app: str | None, n: int) -> list[dict[str, Any]]:
    """An event source that says what it was asked for."""
    return [{"app": app, "n": n}]


@contextlib.asynccontextmanager
async def serving(
    limits: Limits | None = None,
    source: Callable[[], snapshots.SupervisorStatus] = status,
    listen: ListenAddress = LOOPBACK,
    allowed_hosts: tuple[str, ...] = (),
) -> AsyncIterator[tuple[HttpApi, int]]:
    api = HttpApi(listen, source, echo_events, limits, allowed_hosts)
    await api.start()
    try:
        yield api, (0 if listen.path else int(api.bound.rpartition(":")[2]))
    finally:
        await api.close()


class Conn:
    """One raw client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Conn:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: (status, lower-cased headers, body)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), DEADLINE)
        lines = head.decode("latin-1").split("\r\n")
        code = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        length = 0 if head_only else int(headers["content-length"])
        body = await asyncio.wait_for(self.reader.readexactly(length), DEADLINE)
        return code, headers, body

    async def closed(self) -> bytes:
        """What the server sent before it closed its side (EOF) without another word."""
        return await asyncio.wait_for(self.reader.read(), DEADLINE)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


GET = b"GET %b HTTP/1.1\r\nHost: localhost\r\n\r\n"


def test_keep_alive_pipelining_head_and_query() -> None:
    """Three pipelined requests in one write get three answers in order on one
    connection (HEAD without a body; the first value of a repeated query name counts);
    Connection: close ends it after the last."""

    async def main() -> None:
        async with serving() as (_, port):
            c = await Conn.open(port)
            await c.send(
                GET % b"/events?n=7&app=&n=9"
                + b"HEAD /status HTTP/1.1\r\nHost: localhost\r\n\r\n"
                + b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            code, headers, body = await c.response()
            assert code == 200 and headers.get("connection", "keep-alive") == "keep-alive"
            assert json.loads(body) == {"events": [{"app": None, "n": 7}]}
            code, headers, _ = await c.response(head_only=True)
            assert code == 200 and int(headers["content-length"]) > 0
            code, headers, body = await c.response()
            assert json.loads(body) == {"healthy": True} and headers["connection"] == "close"
            assert await c.closed() == b""
            await c.close()

    run(main)


def test_http10_closes_unless_asked_to_keep_alive() -> None:
    async def main() -> None:
        async with serving() as (_, port):
            c = await Conn.open(port)
            await c.send(
                b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                b"GET /healthz HTTP/1.0\r\n\r\n"
            )
            assert (await c.response())[1]["connection"].lower() == "keep-alive"
            assert (await c.response())[0] == 200
            assert await c.closed() == b""
            await c.close()

    run(main)


def bad(request: bytes, status: int, **serve: Any) -> dict[str, Any]:
    """``request`` is refused with ``status`` in the API's JSON, the connection is closed
    with nothing after the refusal (what followed it is not read as a request), the
    refusal is logged without a traceback, and a fresh connection is still answered.
    Returns the JSON error."""
    found: dict[str, Any] = {}

    async def main() -> None:
        async with serving(**serve) as (_, port):
            with log.capture_logs() as logs:
                c = await Conn.open(port)
                await c.send(request)
                got, headers, body = await c.response()
                assert (got, headers["connection"].lower()) == (status, "close"), body
                assert headers["content-type"].startswith("application/json")
                found.update(json.loads(body)["error"])
                assert await c.closed() == b""
                await c.close()
            assert not any("exc_info" in e for e in logs), logs
            assert not any(e.get("log_level") == "error" for e in logs), logs
            fresh = await Conn.open(port)
            await fresh.send(GET % b"/healthz")
            assert (await fresh.response())[0] == 200
            await fresh.close()

    run(main)
    return found


def test_garbage_request_line_is_400() -> None:
    bad(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400)


def test_request_line_without_version_is_505() -> None:
    bad(b"GET /\r\nHost: localhost\r\n\r\n", 505)


def test_http2_version_is_505() -> None:
    bad(b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n", 505)


def test_malformed_header_is_400() -> None:
    bad(b"GET / HTTP/1.1\r\nHost: localhost\r\n folded: value\r\n\r\n", 400)


def test_oversized_header_is_400() -> None:
    bad(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 400)


def test_too_many_headers_is_400() -> None:
    many = b"".join(b"X-%d: 1\r\n" % n for n in range(100))
    bad(b"GET / HTTP/1.1\r\nHost: localhost\r\n" + many + b"\r\n", 400)


def test_long_request_line_is_400() -> None:
    bad(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 400)


def test_large_body_is_413() -> None:
    head = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n"
    bad(head + b"x" * 1000, 413)


def test_large_chunked_body_is_413() -> None:
    chunk = b"800\r\n" + b"x" * 0x800 + b"\r\n"
    bad(b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk, 413)


# -- framing: what a front proxy could read differently is refused -------------------


def test_content_length_lists_are_400_and_the_rest_is_not_a_request() -> None:
    """``Content-Length: 5, 6`` and ``0, 7`` (a desync: framed as 5 or 0, the bytes
    behind them read as a second request) on a kept-alive connection: 400, closed, and
    the smuggled request is never answered."""
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    first = b"GET /status HTTP/1.1\r\nHost: localhost\r\n"
    for length, body in ((b"5, 6", b"helloX"), (b"0, 7", b"")):
        request = first + b"Content-Length: " + length + b"\r\n\r\n" + body + smuggled

        async def main(request: bytes = request) -> None:
            async with serving() as (_, port):
                c = await Conn.open(port)
                await c.send(GET % b"/healthz")  # a kept-alive connection ...
                assert (await c.response())[0] == 200
                await c.send(request)  # ... then the ambiguous request on it
                code, headers, body = await c.response()
                assert (code, headers["connection"].lower()) == (400, "close"), body
                assert b"Content-Length" in body
                assert await c.closed() == b""  # and no answer to the smuggled request
                await c.close()

        run(main)


def test_a_host_list_is_400() -> None:
    error = bad(b"GET /status HTTP/1.1\r\nHost: a, b\r\n\r\n", 400)
    assert "Host" in error["message"]


def test_two_host_fields_are_400() -> None:
    bad(b"GET /status HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n", 400)


def test_a_query_value_int_refuses_is_400_json_not_500() -> None:
    """``n=%C2%B2`` is "²", a digit to str.isdigit() that int() refuses."""

    async def main() -> None:
        async with serving() as (_, port):
            with log.capture_logs() as logs:
                c = await Conn.open(port)
                await c.send(GET % b"/events?n=%C2%B2")
                code, _, body = await c.response()
                assert code == 400
                assert json.loads(body)["error"]["code"] == "usage"
                await c.close()
            assert not any(e.get("log_level") == "error" for e in logs), logs

    run(main)


def test_expect_100_continue_is_not_answered_on_http10() -> None:
    """HTTP/1.0 has no 100 Continue: the server waits for the body, then answers once;
    on HTTP/1.1 the same request gets its 100 first."""

    async def main() -> None:
        async with serving() as (_, port):
            for version, interim in ((b"1.0", False), (b"1.1", True)):
                c = await Conn.open(port)
                await c.send(
                    b"POST /status HTTP/" + version + b"\r\nHost: localhost\r\n"
                    b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
                )
                if interim:
                    assert (await c.response(head_only=True))[0] == 100
                await c.send(b"hello")  # the body: only now is the request whole
                code, _, _ = await c.response()
                assert code == 405, version  # the one answer, not a 100
                await c.close()

    run(main)


def test_the_path_is_routed_as_sent() -> None:
    """``/%73tatus`` is not ``/status``: the path is not percent-decoded for routing."""

    async def main() -> None:
        async with serving() as (_, port):
            c = await Conn.open(port)
            await c.send(GET % b"/%73tatus")
            code, _, body = await c.response()
            assert code == 404 and "/%73tatus" in json.loads(body)["error"]["message"]
            await c.close()

    run(main)


# -- Host names (DNS rebinding) ---------------------------------------------------


async def host_answer(port: int, host: bytes | None, version: bytes = b"1.1") -> int:
    c = await Conn.open(port)
    field = b"" if host is None else b"Host: " + host + b"\r\n"
    await c.send(b"GET /status HTTP/" + version + b"\r\n" + field + b"Connection: close\r\n\r\n")
    code, _, body = await c.response()
    if code != 200:
        assert b'"supervisor"' not in body  # no data, only the error
    await c.close()
    return code


def test_foreign_host_names_get_421_and_no_data() -> None:
    async def main() -> None:
        async with serving(allowed_hosts=("status.example.com",)) as (_, port):
            for host in (
                b"localhost",
                b"LOCALHOST:9190",
                b"app.localhost",
                b"127.0.0.1",
                b"127.0.0.1:%d" % port,
                b"127.1.2.3:80",
                b"[::1]:80",
                b"status.example.com",
                b"Status.Example.Com.:8080",
            ):
                assert await host_answer(port, host) == 200, host
            for host in (b"attacker.example", b"localhost.attacker.example", b"10.1.2.3"):
                assert await host_answer(port, host) == 421, host
            assert await host_answer(port, None) == 400  # HTTP/1.1 requires Host
            assert await host_answer(port, None, b"1.0") == 200  # 1.0 has none

    run(main)


def test_the_listen_address_itself_is_served_on_a_wildcard_listen() -> None:
    """Listening on 0.0.0.0, a request to one of the host's own addresses may name that
    address (an IP literal is never a rebound name); other addresses get 421."""
    wildcard = ListenAddress("0.0.0.0:0", "0.0.0.0", 0)

    async def main() -> None:
        async with serving(listen=wildcard) as (_, port):
            # 127.0.0.2 is the address this connection arrives on
            c = await Conn.open(port, "127.0.0.2")
            await c.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.2:%d\r\n\r\n" % port)
            assert (await c.response())[0] == 200
            await c.close()
            assert await host_answer(port, b"192.0.2.7") == 421
            assert await host_answer(port, b"0.0.0.0") == 421  # the wildcard names no one

    run(main)


def test_any_host_is_served_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "http.sock"

    async def main() -> None:
        async with serving(listen=ListenAddress(f"unix:{path}", path=str(path))):
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.close()
            await writer.wait_closed()

    run(main)


# -- slow, idle, too many, not reading ----------------------------------------------


def test_small_body_is_dropped_and_the_connection_kept() -> None:
    async def main() -> None:
        async with serving() as (_, port):
            c = await Conn.open(port)
            await c.send(
                b"POST /status HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
                + GET % b"/healthz"
            )
            assert (await c.response())[0] == 405
            assert json.loads((await c.response())[2]) == {"healthy": True}
            await c.close()

    run(main)


def test_slow_and_silent_clients_are_closed_at_the_keepalive_timeout() -> None:
    """A head that does not arrive within keepalive_timeout is dropped (slowloris);
    so is a new connection that sends nothing."""

    async def main() -> None:
        async with serving(Limits(keepalive_timeout=0.2)) as (api, port):
            slow = await Conn.open(port)
            await slow.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            silent = await Conn.open(port)
            assert await slow.closed() == b""  # within DEADLINE, however slow
            assert await silent.closed() == b""
            await slow.close()
            await silent.close()
            await wait_until_async(
                lambda: not api.connections, DEADLINE, "the connections to be gone"
            )

    run(main)


def test_idle_kept_alive_connection_is_closed_silently() -> None:
    """After a response, a connection idle for keepalive_timeout is closed without a
    word (the client sent nothing)."""

    async def main() -> None:
        async with serving(Limits(keepalive_timeout=0.2)) as (_, port):
            c = await Conn.open(port)
            await c.send(GET % b"/healthz")
            assert (await c.response())[0] == 200
            assert await c.closed() == b""  # EOF and nothing before it
            await c.close()

    run(main)


def test_connections_over_the_cap_get_503_and_the_cap_frees_up() -> None:
    async def main() -> None:
        async with serving(Limits(max_connections=5)) as (api, port):
            held = [await Conn.open(port) for _ in range(5)]
            for c in held:  # a round trip each: all five are accepted and kept
                await c.send(GET % b"/healthz")
                assert (await c.response())[0] == 200
            extra = await Conn.open(port)
            code, headers, body = await extra.response()
            assert (code, headers["connection"]) == (503, "close")
            assert json.loads(body)["error"]["message"] == "too many connections"
            assert await extra.closed() == b""
            await extra.close()
            await held.pop().close()
            # the server sees the close on its next read
            await wait_until_async(
                lambda: len(api.connections) < 5, DEADLINE, "a free connection slot"
            )
            fresh = await Conn.open(port)
            await fresh.send(GET % b"/healthz")
            assert (await fresh.response())[0] == 200
            for c in [*held, fresh]:
                await c.close()

    run(main)


def test_a_client_that_stops_reading_is_dropped_after_write_timeout() -> None:
    """A response the client does not read is given up (the connection aborted, its
    buffer freed) after write_timeout; the server goes on answering others."""
    big = status(config="x" * BIG)

    async def main() -> None:
        async with serving(Limits(write_timeout=0.2), source=lambda: big) as (api, port):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, GET % b"/status")
                await wait_until_async(
                    lambda: len(api.connections) == 1, DEADLINE, "the connection"
                )
                # never read: the server's write cannot finish, until it gives up
                await wait_until_async(
                    lambda: not api.connections, DEADLINE, "the stuck connection dropped"
                )
                other = await Conn.open(port)
                await other.send(GET % b"/healthz")
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


# -- the allowed_hosts setting, and who imports aiohttp ------------------------------------


def test_allowed_hosts_are_read_lower_cased_and_bad_ones_named_with_path_and_line() -> None:
    good = "supervisor:\n  http:\n    allowed_hosts: [Status.Example.COM, 10.0.0.5, '[fe80::1]']\n"
    cfg = parse_config(good + "apps: {}\n", "sl.yaml")
    assert cfg.supervisor.http.allowed_hosts == ("status.example.com", "10.0.0.5", "[fe80::1]")
    for bad, fragment in (
        ("[ok.example, 'evil.example:80']", "invalid host name 'evil.example:80'"),
        ("[ok.example, '*.example.com']", "invalid host name '*.example.com'"),
        ("[ok.example, 'a b']", "invalid host name 'a b'"),
        ("[ok.example, 5]", "must be a host name"),
        ("ok.example", "must be a list of host names"),
    ):
        text = f"supervisor:\n  http:\n    allowed_hosts: {bad}\napps: {{}}\n"
        with pytest.raises(ConfigError) as info:
            parse_config(text, "sl.yaml")
        error = info.value
        assert (error.file, error.line) == ("sl.yaml", 3), str(error)
        assert (error.path or "").startswith("supervisor.http.allowed_hosts"), str(error)
        assert fragment in error.reason, str(error)


def test_supctl_imports_no_aiohttp(tmp_path: Path) -> None:
    """A plain supctl command (here: status, no daemon there) loads no aiohttp."""
    supctl = [sys.executable, "-X", "importtime", "-m", "supervisord_lite.supctl"]
    proc = subprocess.run(
        [*supctl, "-s", str(tmp_path / "none.sock"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr  # the daemon cannot be reached
    imported = [line.rpartition("|")[2].strip() for line in proc.stderr.splitlines()]
    assert "supervisord_lite.control.protocol" in imported  # it did run
    assert not [m for m in imported if m.split(".")[0] == "aiohttp" or "httpapi" in m]
