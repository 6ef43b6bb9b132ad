"""Sockets and other processes' descriptors (part of host).

The listening sockets the daemon binds and keeps for an app's lifetime; finding a
descriptor in a process tree by what its /proc link reads and copying it out
(pidfd_getfd: how a successor takes a crashed daemon's sockets and pipes back); and
which process accepted a TCP connection (how a check is attributed to a generation).
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterable

from ..config.values import ListenAddress
from . import files, sockdiag

_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """Duplicate file descriptor ``target_fd`` of the process behind ``pidfd`` into ours
    (needs ptrace rights over it: root, or CAP_SYS_PTRACE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, target_fd, 0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd({target_fd}): {os.strerror(err)}")
    os.set_inheritable(fd, False)
    return fd


def take_fd(pid: int, target_fd: int) -> int:
    """A copy of another process's file descriptor (see pidfd_getfd)."""
    pidfd = os.pidfd_open(pid)
    try:
        return pidfd_getfd(pidfd, target_fd)
    finally:
        os.close(pidfd)


# pid -> the fd number where find_fd last found what it looked for in that process. A
# server accepts each connection into the same lowest free number, so the next probe's
# connection is mostly there: one readlink instead of listing and reading every fd.
# Only a guess, checked like any other fd (a process that moves its fds costs a miss);
# bounded, and dropped whole when full (pids of exited processes go with it).
_found_at: dict[int, int] = {}
_FOUND_AT_MAX = 4096


def _reads(pid: int, fd: int | str, link: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}") == link
    except OSError:
        return False


def find_fd(
    pids: Iterable[int], link: str, prefer: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """(pid, fd) of a descriptor whose /proc link reads ``link`` (``socket:[123]``)."""
    if prefer is not None and _reads(prefer[0], prefer[1], link):
        return prefer
    for pid in pids:
        hint = _found_at.get(pid)
        if hint is not None and _reads(pid, hint, link):
            return pid, hint
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            if fd != str(hint) and _reads(pid, fd, link):
                if len(_found_at) >= _FOUND_AT_MAX:
                    _found_at.clear()
                _found_at[pid] = int(fd)
                return pid, int(fd)
    return None


def bind_listener(address: ListenAddress, backlog: int = 2048) -> socket.socket:
    """Bind and listen on an address the supervisor keeps open for an app's lifetime."""
    if address.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            files.bind_unix(sock, address.path)  # its directory may be the app's
        except OSError:
            sock.close()
            raise
    else:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address.host, address.port))
        except OSError:
            sock.close()  # a refused bind (port taken) must not leak the fd
            raise
    sock.listen(backlog)
    sock.set_inheritable(False)
    return sock


def _server_socket_inode(local_port: int, peer_port: int) -> int | None:
    """Inode of the server side of a loopback TCP connection peer_port -> local_port, from
    /proc/net/tcp{,6}: reads every socket on the host, so only a fallback for a kernel
    without sock_diag (see sockdiag.server_inode)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, remote, inode = fields[1], fields[2], fields[9]
                    if (
                        int(local.rsplit(":", 1)[1], 16) == local_port
                        and int(remote.rsplit(":", 1)[1], 16) == peer_port
                    ):
                        return int(inode)
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return None


def accepted_by(pids: Iterable[int], local: tuple[str, int], peer: tuple[str, int]) -> bool | None:
    """Who holds the server side of the TCP connection peer->local: True when one of
    ``pids`` does, False when another process accepted it, None while it still waits
    in the listen backlog (the kernel lists such a socket with inode 0).

    ``peer`` is the checker's own (client) address; the server side of its connection
    has it as the remote address. This is how a check is attributed to the generation
    that really accepted it on a socket shared with others.
    """
    try:
        inode = sockdiag.server_inode(local, peer)
    except OSError:  # no NETLINK_SOCK_DIAG (a kernel built without it, a seccomp filter)
        inode = _server_socket_inode(local[1], peer[1])
    if not inode:
        return None
    return find_fd(pids, f"socket:[{inode}]") is not None
