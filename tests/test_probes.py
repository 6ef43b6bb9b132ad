"""The probe's own mechanics on real loopback sockets: connecting, attribution, the
fd hint, and the shared grid of ticks the liveness checks fall due on."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from supervisord_lite.host import fds
from supervisord_lite.instance import probes
from supervisord_lite.instance.liveness import next_tick, phase_of, tick_for


def _me() -> Iterator[int]:
    return iter([os.getpid()])


def test_a_probe_of_a_listener_whose_queue_is_full_times_out_without_blocking_the_loop() -> None:
    """The handshake does not finish at once (the SYN is dropped): the probe waits for
    it in the loop, which keeps running meanwhile, and says it timed out."""
    srv = socket.socket()
    queued: list[socket.socket] = []
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)  # an accept queue of one, never accepted from
        port = srv.getsockname()[1]
        for _ in range(2):  # the queue full, and one more waiting for room
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            queued.append(c)

        async def run() -> tuple[probes.ProbeResult, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.ensure_future(ticker())
            try:
                result = await probes.probe_http(f"http://127.0.0.1:{port}/", 0.5, _me)
            finally:
                task.cancel()
            return result, ticks

        result, ticks = asyncio.run(run())
        assert not result.ok
        assert "timed out" in result.detail, result.detail
        assert ticks >= 5  # the loop ran while the probe waited
    finally:
        for s in (*queued, srv):
            s.close()


def test_a_probe_of_a_closed_port_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: a SYN there is reset
        result = asyncio.run(probes.probe_tcp(f"127.0.0.1:{port}", 1.0, _me))
    assert not result.ok
    assert "refused" in result.detail, result.detail


def test_an_attributed_probe_of_our_own_listener_counts_as_ours() -> None:
    """The test process is the owner and accepts (in a thread-free way: the loop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    port = srv.getsockname()[1]

    async def serve_once() -> None:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(srv)
        with conn:
            await loop.sock_recv(conn, 4096)
            await loop.sock_sendall(conn, b"HTTP/1.0 204 No Content\r\n\r\n")

    async def run() -> probes.ProbeResult:
        server = asyncio.ensure_future(serve_once())
        result = await probes.probe_http(f"http://127.0.0.1:{port}/", 2.0, _me)
        await server
        return result

    try:
        result = asyncio.run(run())
    finally:
        srv.close()
    assert result.ok and not result.foreign, result


@pytest.mark.parametrize("claimed", [True, False])
def test_a_connection_nobody_claims_is_looked_at_once_more(
    monkeypatch: pytest.MonkeyPatch, claimed: bool
) -> None:
    """accept() shows the socket to sock_diag a moment before the fd is in the owner's
    table: a first look that finds it in nobody's fds is not yet "foreign". One that
    another instance claims is (the lookup is replaced here: the kernel's window is
    too short to hit on purpose)."""
    looks: list[int] = []

    def accepted(owner: object, local: object, peer: object) -> tuple[bool | None, int]:
        looks.append(1)
        return (False, 4242) if len(looks) == 1 else (True, 0)

    monkeypatch.setattr(probes, "_accepted", accepted)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        credits: list[int] = []

        def claim(inode: int) -> Callable[[], None] | None:
            return (lambda: credits.append(inode)) if claimed else None

        result = asyncio.run(probes.probe_tcp(f"127.0.0.1:{port}", 2.0, _me, claim))
    if claimed:
        assert result.foreign and result.inode == 4242 and len(looks) == 1
        assert result.answered and result.credit is not None  # an accept: TCP's answer
        result.credit()
        assert credits == [4242]
    else:
        assert result.ok and not result.foreign and len(looks) == 2


def test_find_fd_checks_its_hint_and_finds_a_moved_descriptor() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    moved = -1
    try:
        link_a = f"socket:[{os.fstat(a.fileno()).st_ino}]"
        first = fds.find_fd(_me(), link_a)
        assert first == (os.getpid(), a.fileno())
        # the number where it was found now holds another socket, and ``a`` moved
        old = a.fileno()
        moved = os.dup(old)
        os.dup2(c.fileno(), old)
        assert fds.find_fd(_me(), link_a) == (os.getpid(), moved)
        link_c = f"socket:[{os.fstat(c.fileno()).st_ino}]"
        found = fds.find_fd(_me(), link_c)
        assert found is not None and found[1] in (old, c.fileno())
        assert fds.find_fd(_me(), "socket:[1]") is None
    finally:
        if moved >= 0:
            os.close(moved)
        for s in (a, b, c, d):
            s.close()


INTERVALS = [0.001, 0.05, 0.3, 1.0, 2.5, 3.0, 5.0, 10.0, 60.0, 3600.0]
PHASES = [0.0, 0.25, 1 / 3, 0.5, 0.75]
AFTERS = [0.0, 0.0001, 1.0, 12345.678, 12345.75, 98765.4321, 1e6 + 0.125]


@pytest.mark.parametrize("interval", INTERVALS)
def test_next_tick_delays_a_check_by_less_than_a_tick(interval: float) -> None:
    tick = tick_for(interval)
    assert tick <= 0.25 and tick <= interval / 10
    for after, phase in itertools.product(AFTERS, PHASES):
        due = next_tick(after, interval, phase)
        assert after - 1e-9 <= due < after + tick + 1e-9, (after, phase, due)
        # on the grid of its phase
        steps = (due - phase * tick) / tick
        assert abs(steps - round(steps)) < 1e-6, (after, phase, due)


def test_checks_due_within_one_tick_share_its_instant() -> None:
    """Instances whose checks fall due in the same tick wake together (identical
    deadlines), and the instances of one app, in their turns, never together."""
    start = (int(time.monotonic() / 0.25) + 1) * 0.25
    dues = {next_tick(start + 0.01 + j * 0.02, 5.0) for j in range(10)}
    assert dues == {start + 0.25}
    names = ("primary", "backup")
    primary = next_tick(start + 0.01, 5.0, phase_of("primary", names))
    backup = next_tick(start + 0.01, 5.0, phase_of("backup", names))
    assert (primary, backup) == (start + 0.25, start + 0.125)


def test_phase_of_spreads_an_apps_instances_over_a_tick() -> None:
    names = ("primary", "backup", "third")
    assert [phase_of(n, names) for n in names] == [0.0, 1 / 3, 2 / 3]
    assert phase_of("gone", names) == 0.0
    assert all(0 <= phase_of(n, names) < 1 for n in names)
