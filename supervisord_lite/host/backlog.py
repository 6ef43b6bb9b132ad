"""What a supervisor-held TCP listener's accept queue did while a swap ran.

The supervisor owns every listening socket, so it can prove a reload dropped nothing
instead of trusting it: for a LISTEN socket, ``TCP_INFO`` reports the accept queue's
current length (``tcpi_unacked``) and its limit, the listen backlog (``tcpi_sacked``);
``SO_MEMINFO`` reports the socket's own drop counter (``sk_drops``), which the kernel
increments for every connection that listener dropped (``tcp_listendrop``: a full
accept queue -- the ListenOverflows case -- and the other ListenDrops). Where
``SO_MEMINFO`` is missing (Linux < 4.12) the host-wide ``ListenDrops`` of
``/proc/net/netstat`` is used instead, and the figures say so (``drops_scope``).

The queue length is sampled only while a swap runs (every :data:`INTERVAL`), so an
idle daemon pays nothing; a burst that fills and drains between two samples is not
seen in the peak, but it cannot hide a drop: the drop counter is the kernel's own.

Standard library only (socket, struct).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass

INTERVAL = 0.005  # seconds between two samples of the accept queue during a swap

# struct tcp_info: eight u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked
_TCP_INFO_QUEUE = struct.Struct("=II")
_TCP_INFO_QUEUE_OFFSET = 24
_TCP_INFO_SIZE = 104  # enough for every field up to tcpi_sacked on any kernel
SO_MEMINFO: int = getattr(socket, "SO_MEMINFO", 55)  # Linux 4.12+; Python does not name it
_SK_MEMINFO_DROPS = 8  # index of sk_drops in the u32[SK_MEMINFO_VARS] array
_TCP_LISTEN = 10  # tcpi_state of a listening socket
_NETSTAT = "/proc/net/netstat"


@dataclass(frozen=True)
class ListenerSample:
    """One look at a listening socket."""

    queued: int  # connections completed by the kernel, waiting for accept()
    limit: int  # the listen backlog (the queue holds up to limit + 1)
    drops: int | None  # this socket's drop counter (None: the kernel does not tell)


@dataclass(frozen=True)
class BacklogFigures:
    """What one listener's accept queue did over a period (a swap)."""

    accept_queue_peak: int  # the longest accept queue seen
    accept_queue_limit: int
    listen_drops: int | None  # connections dropped meanwhile (None: unknown)
    drops_scope: str | None  # "socket" (this listener's own count) or "host" (all listeners)
    samples: int


def read_listener(sock: socket.socket) -> ListenerSample | None:
    """The accept queue and drop count of a listening TCP socket (None for others)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.fileno() < 0:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _TCP_INFO_QUEUE_OFFSET + _TCP_INFO_QUEUE.size or info[0] != _TCP_LISTEN:
        return None
    queued, limit = _TCP_INFO_QUEUE.unpack_from(info, _TCP_INFO_QUEUE_OFFSET)
    return ListenerSample(queued, limit, _socket_drops(sock))


def _socket_drops(sock: socket.socket) -> int | None:
    size = 4 * (_SK_MEMINFO_DROPS + 1)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, size)
    except OSError:
        return None
    if len(raw) < size:
        return None
    value: int = struct.unpack_from("=I", raw, 4 * _SK_MEMINFO_DROPS)[0]
    return value


def host_listen_drops(path: str = _NETSTAT) -> int | None:
    """TcpExt ListenDrops of the whole network namespace (a superset of ListenOverflows)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if not names.startswith("TcpExt:"):
            continue
        table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
        value = table.get("ListenDrops")
        return int(value) if value is not None and value.isdigit() else None
    return None


class BacklogWatch:
    """Samples one listener's accept queue from :meth:`start` until :meth:`stop`."""

    def __init__(self, sock: socket.socket, interval: float = INTERVAL) -> None:
        self._sock = sock
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._peak = 0
        self._limit = 0
        self._samples = 0
        self._first_drops: int | None = None
        self._scope: str | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Take the first sample and begin sampling; False when it is no TCP listener."""
        first = self._sample()
        if first is None:
            return False
        if first.drops is not None:
            self._first_drops, self._scope = first.drops, "socket"
        else:
            self._first_drops = host_listen_drops()
            self._scope = "host" if self._first_drops is not None else None
        self._task = loop.create_task(self._run(), name="backlog watch")
        return True

    def _sample(self) -> ListenerSample | None:
        sample = read_listener(self._sock)
        if sample is not None:
            self._samples += 1
            self._peak = max(self._peak, sample.queued)
            self._limit = sample.limit
        return sample

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._sample()

    def stop(self) -> BacklogFigures:
        """End the sampling (with one last sample); the figures of the whole period."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        last = self._sample()
        drops: int | None = None
        if self._first_drops is not None:
            now = last.drops if self._scope == "socket" and last is not None else None
            if self._scope == "host":
                now = host_listen_drops()
            if now is not None:
                drops = max(0, now - self._first_drops)
        return BacklogFigures(self._peak, self._limit, drops, self._scope, self._samples)

    def cancel(self) -> None:
        """Stop sampling without figures (the watched swap was abandoned)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
