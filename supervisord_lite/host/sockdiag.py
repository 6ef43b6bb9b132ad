"""Look one TCP connection up in the kernel by its addresses (sock_diag netlink).

Attributing a probe needs the inode of the server side of one connection. Reading
/proc/net/tcp{,6} for it costs as much as every socket on the host; sock_diag
(NETLINK_SOCK_DIAG, ``SOCK_DIAG_BY_FAMILY``) answers an exact request with the kernel's
own hash lookup of the 4-tuple, so the cost does not grow with the other connections.
When the addresses are not both IP literals we fall back to a dump filtered by the
kernel on the two ports (``idiag_sport``/``idiag_dport`` of the request), which walks
the kernel's table but returns only the matching sockets.

Stdlib only (socket + struct); Linux only, like the rest of the daemon.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
_ALL_STATES = 0xFFFFFFFF
_NOCOOKIE = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid:
# sport, dport (big endian), src[16], dst[16], if, cookie[2]
_REQ = struct.Struct("=BBBxI")
_SOCKID = struct.Struct("!HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue,
# wqueue, uid, inode
_MSG_HEAD = struct.Struct("=BBBB")
_MSG_TAIL = struct.Struct("=IIIII")
_MSG_LEN = _MSG_HEAD.size + _SOCKID.size + _SOCKID_TAIL.size + _MSG_TAIL.size

_seq = 0


def _pack_addr(family: int, host: str) -> bytes:
    packed = socket.inet_pton(family, host)
    return packed.ljust(16, b"\0")


def family_of(host: str) -> int | None:
    """The family of an IP literal (None for a name): inet_pton, cheaper than parsing
    with ipaddress on every probe."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def _request(
    family: int, sport: int, dport: int, src: bytes, dst: bytes, dump: bool
) -> tuple[bytes, int]:
    global _seq
    _seq = (_seq + 1) & 0xFFFFFFFF
    body = (
        _REQ.pack(family, socket.IPPROTO_TCP, 0, _ALL_STATES)
        + _SOCKID.pack(sport, dport, src, dst)
        + _SOCKID_TAIL.pack(0, _NOCOOKIE, _NOCOOKIE)
    )
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    return _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, _seq, 0
    ) + body, _seq


def _parse(data: bytes, seq: int) -> tuple[list[tuple[int, int, int]], bool]:
    """(sport, dport, inode) of each socket in one netlink datagram, and whether the
    reply is complete (NLMSG_DONE, an error, or a single non-dump answer)."""
    found: list[tuple[int, int, int]] = []
    done = False
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind, flags, mseq, _ = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            break
        payload = off + _NLMSGHDR.size
        if mseq == seq:
            if kind == NLMSG_DONE:
                done = True
            elif kind == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, payload)
                if err and -err != errno.ENOENT:
                    raise OSError(-err, f"sock_diag: {os.strerror(-err)}")
                done = True
            elif kind == SOCK_DIAG_BY_FAMILY and length - _NLMSGHDR.size >= _MSG_LEN:
                sport, dport, _, _ = _SOCKID.unpack_from(data, payload + _MSG_HEAD.size)
                tail = payload + _MSG_HEAD.size + _SOCKID.size + _SOCKID_TAIL.size
                inode = _MSG_TAIL.unpack_from(data, tail)[4]
                found.append((sport, dport, inode))
                if not flags & 0x2:  # NLM_F_MULTI unset: a single answer
                    done = True
        off += (length + 3) & ~3
    return found, done


_nl: socket.socket | None = None  # one netlink socket for every lookup (probes are frequent)


def _ask(message: bytes, seq: int) -> list[tuple[int, int, int]]:
    global _nl
    if _nl is None:
        _nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        _nl.settimeout(1.0)  # the kernel answers at once; this only bounds a surprise
    try:
        _nl.sendto(message, (0, 0))
        found: list[tuple[int, int, int]] = []
        for _ in range(10_000):  # bounded: a dump filtered on two ports is a few datagrams
            part, done = _parse(_nl.recv(65536), seq)  # earlier requests' leftovers: other seq
            found.extend(part)
            if done:
                break
        return found
    except OSError:
        _nl.close()  # whatever is left queued on it belongs to no one now
        _nl = None
        raise


def server_inode(local: tuple[str, int], peer: tuple[str, int]) -> int | None:
    """Inode of the socket whose local address is ``local`` and remote ``peer`` (the
    server side of a connection made from ``peer``): 0 while the connection waits in a
    listen backlog (no process holds it yet), None when the kernel has no such socket.
    """
    lfam, pfam = family_of(local[0]), family_of(peer[0])
    if lfam is not None and lfam == pfam:
        msg, seq = _request(
            lfam, local[1], peer[1], _pack_addr(lfam, local[0]), _pack_addr(pfam, peer[0]), False
        )
        for sport, dport, inode in _ask(msg, seq):
            # an exact lookup that misses the connection finds the listener (dport 0)
            if sport == local[1] and dport == peer[1]:
                return inode
        return None
    for family in (socket.AF_INET, socket.AF_INET6):  # a v6 listener takes v4 too
        msg, seq = _request(family, local[1], peer[1], bytes(16), bytes(16), True)
        for sport, dport, inode in _ask(msg, seq):
            if sport == local[1] and dport == peer[1]:
                return inode
    return None
