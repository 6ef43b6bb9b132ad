"""Readiness and liveness probes: HTTP, TCP and exec, attributed to one process tree.

A probe sent to a socket that several processes accept on (primary and backup on
one address, or two generations during a hot swap) may be answered by the wrong
one. When an ``owner`` is given, a probe counts only if one of the owner's
processes accepted the connection: after connecting, the prober sends one byte of
TCP urgent data, then looks the server side of its connection up in the kernel's
socket table (sock_diag, then the owner's fds), and only then sends its request. A
connection accepted by another process is still asked (its answer can be credited
to that process: it proves that one serves) and is reported as ``foreign`` with the
inode of the socket that accepted it; the caller retries for a verdict of its own.

Why the urgent byte: a listener with ``TCP_DEFER_ACCEPT`` (Unicorn sets it on every
listener it has, inherited ones too; nginx ``deferred``, HAProxy ``defer-accept``)
is not handed a connection before data arrives, so a prober that waited for the
accept before writing would wait forever. Urgent data counts as data for that, yet
an application that does not ask for it (``MSG_OOB``, ``SO_OOBINLINE``) never reads
it: the server still sees exactly our request, or for a TCP probe a connection that
closes without a byte. The request itself comes only after the attribution because
a server may answer and close a connection before we look, and a closed connection
cannot be attributed.

The probes use a raw non-blocking socket and the loop's ``sock_*`` calls (no stream
objects, no task per probe): a big host runs dozens of probes a second.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..host import fds, sockdiag

Owner = Callable[[], Iterable[int]]  # the pids that may answer for the checked process
# the inode of the socket another process accepted our connection on -> what credits
# that process's instance if its answer proves good (asked while it holds the socket)
Claim = Callable[[int], Callable[[], None] | None]

# An http probe's request after its Host: an app warming its JIT (docs/jvm.md) sends the
# same, since the probe is the first request it answers once live.
PROBE_HEADERS = {"User-Agent": "supervisord-lite", "Connection": "close"}
_ATTRIBUTION_WAIT = 0.5  # how long a connection may sit unaccepted before we give up on it


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    foreign: bool = False  # answered (accepted) by a process that is not the owner
    inode: int = 0  # foreign: the inode of the socket that accepted it (0: unknown)
    answered: bool = False  # foreign: that process answered as a healthy one would
    # foreign: the credit of the instance that accepted it (see Claim), if claimed
    credit: Callable[[], None] | None = field(default=None, compare=False, repr=False)


def _split_hostport(value: str) -> tuple[str, int]:
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    else:
        host, _, port = value.rpartition(":")
    return host, int(port)


def _accepted(
    owner: Owner, local: tuple[str, int], peer: tuple[str, int]
) -> tuple[bool | None, int]:
    """Whether the owner holds the server side of our connection (None: still in the
    backlog), with that socket's inode (0 where sock_diag is not available)."""
    try:
        inode = sockdiag.server_inode(local, peer)
    except OSError:  # no NETLINK_SOCK_DIAG: the slow path, without an inode to credit
        return fds.accepted_by(owner(), local, peer), 0
    if not inode:
        return None, 0
    return fds.find_fd(owner(), f"socket:[{inode}]") is not None, inode


async def _connect(
    host: str, port: int, timeout: float, owner: Owner | None, claim: Claim | None
) -> tuple[socket.socket, int, Callable[[], None] | None] | ProbeResult:
    """A connected socket and, when another process accepted it, that socket's inode
    (-1 if unknown; 0 when ours did or nobody checks) and its claimed credit, or why
    there is none."""
    loop = asyncio.get_running_loop()
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(timeout):
            family = sockdiag.family_of(host)
            address: tuple[Any, ...] = (host, port)
            if family is None:  # a name: resolved (in the loop's executor) each time
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            await _connected(loop, sock, address)
    except (OSError, TimeoutError) as exc:
        if sock is not None:
            sock.close()
        return ProbeResult(False, f"connect to {host}:{port}: {_reason(exc)}")
    if owner is None:
        return sock, 0, None
    local, peer = (str(address[0]), port), sock.getsockname()[:2]
    _send_urgent(sock)
    wait_until = time.monotonic() + min(timeout, _ATTRIBUTION_WAIT)
    pause = 0.002
    looked_again = False
    while True:
        ours, inode = _accepted(owner, local, peer)
        if ours:
            return sock, 0, None
        if ours is False:
            # claimed now: the accepting process holds the connection until it has
            # our request, and may close it as soon as it has answered
            credit = claim(inode) if claim is not None and inode else None
            if credit is not None or looked_again or not inode:
                return sock, inode or -1, credit
            # nobody we know holds it: accept() makes the socket visible to sock_diag
            # a moment before the descriptor appears in the process's fd table, so
            # the owner may be in between; one more look after a pause tells
            looked_again = True
            pause = 0.002
        if time.monotonic() >= wait_until:
            _close(sock)
            return ProbeResult(
                False,
                f"{host}:{port}: the connection was not accepted within "
                f"{_ATTRIBUTION_WAIT:g}s (the process is not accepting)",
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


async def _connected(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[Any, ...]
) -> None:
    """Connect the non-blocking ``sock``. On loopback the kernel has usually finished
    the handshake before the first connect() returns (EINPROGRESS all the same), so a
    second call mostly completes it at once: that saves the wait for writability (two
    epoll registrations and a wake-up of the loop), the biggest share of a probe's CPU
    after the kernel's own work. Otherwise the loop waits for it as usual."""
    try:
        sock.connect(address)
        return
    except BlockingIOError:
        pass
    try:
        sock.connect(address)  # 0 once established; the socket's error if refused
    except BlockingIOError:  # EALREADY: the handshake is still under way
        await loop.sock_connect(sock, address)


def _close(sock: socket.socket) -> None:
    """Close after reading what has arrived: a socket closed with unread data sends a
    reset instead of a FIN, and a server that sent a greeting (or the rest of its
    response) would see its connection reset by our probe."""
    try:
        for _ in range(16):  # bounded: a server that streams is not waited for
            if not sock.recv(65536):
                break
    except OSError:  # nothing more for now (BlockingIOError), or reset already
        pass
    sock.close()


def _send_urgent(sock: socket.socket) -> None:
    """One byte of urgent data: it wakes a deferred-accept listener, and the app's
    reads skip it (see the module's docstring)."""
    try:
        sock.send(b"!", socket.MSG_OOB)
    except OSError:
        pass  # reset already: the attribution below finds no server side and says so


def _foreign(
    host: str, port: int, inode: int, answered: bool, credit: Callable[[], None] | None
) -> ProbeResult:
    return ProbeResult(
        False,
        f"{host}:{port} was accepted by another process",
        foreign=True,
        inode=max(inode, 0),
        answered=answered,
        credit=credit,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def probe_tcp(
    target: str, timeout: float, owner: Owner | None, claim: Claim | None = None
) -> ProbeResult:
    host, port = _split_hostport(target)
    got = await _connect(host, port, timeout, owner, claim)
    if isinstance(got, ProbeResult):
        return got
    sock, inode, credit = got
    _close(sock)
    if inode:
        return _foreign(host, port, inode, True, credit)  # it accepted: all TCP asks
    return ProbeResult(True, f"{target} accepted")


async def _status_line(sock: socket.socket, deadline: float) -> bytes:
    """The response's first line (what came before EOF, if the server closed first)."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout_at(loop.time() + max(0.001, deadline - time.monotonic())):
        while b"\n" not in data and len(data) < 65536:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\n")[0]


async def probe_http(
    url: str, timeout: float, owner: Owner | None, claim: Claim | None = None
) -> ProbeResult:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    deadline = time.monotonic() + timeout
    got = await _connect(host, port, timeout, owner, claim)
    if isinstance(got, ProbeResult):
        return got
    sock, inode, credit = got
    try:
        headers = "".join(f"{name}: {value}\r\n" for name, value in PROBE_HEADERS.items())
        request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}\r\n"
        await asyncio.get_running_loop().sock_sendall(sock, request.encode())
        line = await _status_line(sock, deadline)
    except (OSError, TimeoutError) as exc:
        return _foreign(host, port, inode, False, None) if inode else _failed(url, exc)
    finally:
        _close(sock)
    fields = line.decode(errors="replace").split()
    status = int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else None
    if inode:
        return _foreign(host, port, inode, status is not None and 200 <= status < 300, credit)
    if status is None:
        return ProbeResult(False, f"GET {url}: no HTTP response")
    if 200 <= status < 300:
        return ProbeResult(True, f"GET {url}: {status}")
    return ProbeResult(False, f"GET {url}: HTTP {status}")


def _failed(url: str, exc: BaseException) -> ProbeResult:
    return ProbeResult(False, f"GET {url}: {_reason(exc)}")


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
