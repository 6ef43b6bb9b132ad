"""Readiness and liveness probes: HTTP, TCP and exec, attributed to one process tree.

A probe sent to a socket that several processes accept on (primary and backup on
one address, or two generations during a hot swap) may be answered by the wrong
one. When an ``owner`` is given, a probe counts only if one of the owner's
processes accepted the connection: after connecting, the prober sends one byte of
TCP urgent data, then looks the server side of its connection up in the kernel's
socket table (oslayer.accepted_by), and only then sends its request; a connection
accepted by another process is closed and reported as "answered by another
process", which readiness simply retries.

Why the urgent byte: a listener with ``TCP_DEFER_ACCEPT`` (Unicorn sets it on every
listener it has, inherited ones too; nginx ``deferred``, HAProxy ``defer-accept``)
is not handed a connection before data arrives, so a prober that waited for the
accept before writing would wait forever. Urgent data counts as data for that, yet
an application that does not ask for it (``MSG_OOB``, ``SO_OOBINLINE``) never reads
it: the server still sees exactly our request, or for a TCP probe a connection that
closes without a byte. The request itself comes only after the attribution because
a server may answer and close a connection before we look, and a closed connection
cannot be attributed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import oslayer

Owner = Callable[[], set[int]]  # the pids that may answer for the checked process

_ATTRIBUTION_WAIT = 0.5  # how long a connection may sit unaccepted before we give up on it


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    foreign: bool = False  # answered (accepted) by a process that is not the owner


def _split_hostport(value: str) -> tuple[str, int]:
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    else:
        host, _, port = value.rpartition(":")
    return host, int(port)


async def _connect(
    host: str, port: int, timeout: float, owner: Owner | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | ProbeResult:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return ProbeResult(False, f"connect to {host}:{port}: {_reason(exc)}")
    if owner is None:
        return reader, writer
    peer = writer.get_extra_info("sockname")
    _send_urgent(writer)
    deadline = time.monotonic() + min(timeout, _ATTRIBUTION_WAIT)
    pause = 0.002
    while True:
        who = oslayer.accepted_by(owner(), (host, port), (peer[0], peer[1]))
        if who:
            return reader, writer
        if who is False:
            writer.close()
            return ProbeResult(
                False, f"{host}:{port} was accepted by another process", foreign=True
            )
        if time.monotonic() >= deadline:
            writer.close()
            return ProbeResult(
                False,
                f"{host}:{port}: the connection was not accepted within "
                f"{_ATTRIBUTION_WAIT:g}s (the process is not accepting)",
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


def _send_urgent(writer: asyncio.StreamWriter) -> None:
    """One byte of urgent data: it wakes a deferred-accept listener, and the app's
    reads skip it (see the module's docstring)."""
    # asyncio's transport has no send(flags); a dup of the fd is the same socket
    fd = os.dup(writer.get_extra_info("socket").fileno())
    with socket.socket(fileno=fd) as sock:
        try:
            sock.send(b"!", socket.MSG_OOB)
        except OSError:
            pass  # reset already: the attribution below finds no server side and says so


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def probe_tcp(target: str, timeout: float, owner: Owner | None) -> ProbeResult:
    host, port = _split_hostport(target)
    got = await _connect(host, port, timeout, owner)
    if isinstance(got, ProbeResult):
        return got
    _, writer = got
    writer.close()
    return ProbeResult(True, f"{target} accepted")


async def probe_http(url: str, timeout: float, owner: Owner | None) -> ProbeResult:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    deadline = time.monotonic() + timeout
    got = await _connect(host, port, timeout, owner)
    if isinstance(got, ProbeResult):
        return got
    reader, writer = got
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: supervisord-lite\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), max(0.001, deadline - time.monotonic()))
    except (OSError, TimeoutError) as exc:
        return ProbeResult(False, f"GET {url}: {_reason(exc)}")
    finally:
        writer.close()
    fields = line.decode(errors="replace").split()
    if len(fields) < 2 or not fields[1].isdigit():
        return ProbeResult(False, f"GET {url}: no HTTP response")
    status = int(fields[1])
    if 200 <= status < 300:
        return ProbeResult(True, f"GET {url}: {status}")
    return ProbeResult(False, f"GET {url}: HTTP {status}")


ExecRunner = Callable[[tuple[str, ...], float], "asyncio.Future[tuple[int | None, str]]"]


async def probe_exec(
    argv: tuple[str, ...],
    timeout: float,
    run: Callable[[tuple[str, ...], float], asyncio.Future[tuple[int | None, str]]],
) -> ProbeResult:
    code, output = await run(argv, timeout)
    if code is None:
        return ProbeResult(False, f"{argv[0]}: timed out after {timeout:g}s")
    if code == 0:
        return ProbeResult(True, f"{argv[0]}: exit 0")
    tail = output.strip().splitlines()[-1:] if output.strip() else []
    return ProbeResult(False, f"{argv[0]}: exit {code}" + (f": {tail[0]}" if tail else ""))
