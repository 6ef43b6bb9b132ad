"""Who is on the other end of the control socket, and whether they may talk to the daemon.

The kernel's word (SO_PEERCRED, SO_PEERGROUPS at connect()), never the client's:
root, the daemon's own user and members of the configured group are let in.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

#: Linux's SO_PEERGROUPS (4.13+); the socket module does not name it before 3.12.
SO_PEERGROUPS: int = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class _SockoptSocket(Protocol):
    """A connected socket, or asyncio's TransportSocket wrapper around one."""

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


@dataclass(frozen=True)
class PeerCredentials:
    """Who is on the other end of a unix socket, as the kernel saw it at connect()."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()  # supplementary groups, when the kernel tells them


def peer_credentials(sock: _SockoptSocket) -> PeerCredentials:
    """Read SO_PEERCRED (and SO_PEERGROUPS where available) of a connected unix socket."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return PeerCredentials(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: _SockoptSocket) -> tuple[int, ...]:
    # Most users have few groups; retry with room for NGROUPS_MAX only when told ERANGE.
    for count in (64, 65536):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * count)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue
            return ()  # an old kernel: membership is then judged by the primary gid only
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return ()


def peer_allowed(peer: PeerCredentials, daemon_uid: int, group_gid: int | None) -> bool:
    """Root, the daemon's own user, and members of the configured group may connect."""
    if peer.uid in (0, daemon_uid):
        return True
    return group_gid is not None and (peer.gid == group_gid or group_gid in peer.groups)
