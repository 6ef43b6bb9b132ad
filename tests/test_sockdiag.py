"""sock_diag lookups of one connection, on real loopback sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from supervisord_lite.host import fds, sockdiag


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _connection(
    family: int, bind_host: str, connect_host: str, accept: bool = True
) -> Iterator[tuple[tuple[str, int], tuple[str, int], socket.socket | None]]:
    """(server address, client address, accepted socket or None) of one connection."""
    srv = socket.socket(family, socket.SOCK_STREAM)
    cli: socket.socket | None = None
    conn: socket.socket | None = None
    try:
        srv.bind((bind_host, 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        cli = socket.create_connection((connect_host, port), timeout=5)
        if accept:
            conn, _ = srv.accept()
        peer = cli.getsockname()
        yield (connect_host, port), (peer[0], peer[1]), conn
    finally:
        for s in (conn, cli, srv):
            if s is not None:
                s.close()


CASES = [(socket.AF_INET, "127.0.0.1", "127.0.0.1")]
if _has_ipv6():
    CASES += [(socket.AF_INET6, "::1", "::1"), (socket.AF_INET6, "::", "127.0.0.1")]


@pytest.mark.parametrize(("family", "bind_host", "connect_host"), CASES)
def test_exact_lookup_finds_the_accepted_socket(
    family: int, bind_host: str, connect_host: str
) -> None:
    with _connection(family, bind_host, connect_host) as (local, peer, conn):
        assert conn is not None
        inode = os.fstat(conn.fileno()).st_ino
        assert sockdiag.server_inode(local, peer) == inode
        # the /proc/net/tcp fallback agrees with it
        assert fds._server_socket_inode(local[1], peer[1]) == inode


def test_hostname_falls_back_to_a_port_filtered_dump() -> None:
    with _connection(socket.AF_INET, "127.0.0.1", "127.0.0.1") as (local, peer, conn):
        assert conn is not None
        inode = os.fstat(conn.fileno()).st_ino
        assert sockdiag.server_inode(("localhost", local[1]), peer) == inode


def test_a_connection_in_the_backlog_has_inode_zero() -> None:
    with _connection(socket.AF_INET, "127.0.0.1", "127.0.0.1", accept=False) as (local, peer, _):
        assert sockdiag.server_inode(local, peer) == 0
        assert fds.accepted_by([os.getpid()], local, peer) is None


def test_no_such_connection_is_none_not_the_listener() -> None:
    with _connection(socket.AF_INET, "127.0.0.1", "127.0.0.1") as (local, peer, _):
        # same listener, a client port nobody uses: the kernel's lookup falls back to
        # the listening socket, which must not be taken for the connection
        assert sockdiag.server_inode(local, (peer[0], peer[1] ^ 1)) is None
        assert sockdiag.server_inode(("localhost", local[1]), (peer[0], peer[1] ^ 1)) is None


def test_accepted_by_tells_the_holder_from_another_process() -> None:
    with _connection(socket.AF_INET, "127.0.0.1", "127.0.0.1") as (local, peer, conn):
        assert conn is not None
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            assert fds.accepted_by([os.getpid()], local, peer) is True
            assert fds.accepted_by([other.pid], local, peer) is False
        finally:
            other.kill()
            other.wait()


def test_many_unrelated_connections_do_not_confuse_it() -> None:
    with _connection(socket.AF_INET, "127.0.0.1", "127.0.0.1") as (local, peer, conn):
        assert conn is not None
        srv = socket.socket()
        pairs: list[socket.socket] = []
        try:
            srv.bind(("127.0.0.1", 0))
            srv.listen(64)
            for _ in range(50):
                pairs.append(socket.create_connection(srv.getsockname(), timeout=5))
                pairs.append(srv.accept()[0])
            assert sockdiag.server_inode(local, peer) == os.fstat(conn.fileno()).st_ino
        finally:
            for s in pairs:
                s.close()
            srv.close()
