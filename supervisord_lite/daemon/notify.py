"""The notify protocol both ways: to systemd (sdnotify), and from our own children.

:class:`SystemdNotifier` tells systemd READY=1, STATUS=, WATCHDOG=1, RELOADING=1 and
STOPPING=1 (the only module that imports sdnotify). :class:`NotifyServer` is the
NOTIFY_SOCKET the supervisor serves to its children: a datagram socket with
SO_PASSCRED, so every message arrives with the sender's pid, which the supervisor
uses to attribute READY=1 and WATCHDOG=1 to one instance's generation.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable

import sdnotify

from ..log import get_logger

log = get_logger("notify")

Handler = Callable[[int, dict[str, str]], None]  # (sender pid, fields)

_CREDS = struct.Struct("3i")


class SystemdNotifier:
    """Talks to systemd when NOTIFY_SOCKET is set; does nothing otherwise."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        usec = os.environ.get("WATCHDOG_USEC")
        wd_pid = os.environ.get("WATCHDOG_PID")
        self.watchdog_interval: float | None = None
        if usec and usec.isdigit() and (not wd_pid or wd_pid == str(os.getpid())):
            # ping at half the timeout, as sd_watchdog_enabled(3) advises
            self.watchdog_interval = int(usec) / 2_000_000

    def send(self, *fields: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(fields))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=applying the new config")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping all apps")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def store_fd(self, name: str, fd: int) -> None:
        """Put a copy of ``fd`` in systemd's file-descriptor store under ``name``, so a
        restarted daemon gets it back (needs FileDescriptorStoreMax= in the unit)."""
        address = os.environ.get("NOTIFY_SOCKET")
        if not self.enabled or not address:
            return
        if address.startswith("@"):
            address = "\0" + address[1:]
        message = f"FDSTORE=1\nFDNAME={name}".encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                # connect first: send_fds ignores an address argument on 3.11
                s.connect(address)
                socket.send_fds(s, [message], [fd])
        except OSError as exc:
            # systemd went away or refuses: recovery falls back to pidfd_getfd
            log.warning("fd_store_failed", name=name, error=str(exc))

    def remove_fd(self, name: str) -> None:
        self.send("FDSTOREREMOVE=1", f"FDNAME={name}")


def inherited_fds() -> dict[str, int]:
    """Fds systemd passed us (from its fd store), by name; LISTEN_* are then unset."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return {}
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return {}
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    fds: dict[str, int] = {}
    for index in range(count):
        fd = 3 + index
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) and names[index] else f"fd{fd}"
        fds[name] = fd
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    return fds


class NotifyServer:
    """The NOTIFY_SOCKET our children send READY=1 / WATCHDOG=1 / STATUS= to."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, inherited_fd: int | None = None) -> None:
        if inherited_fd is not None:  # kept open across an upgrade: children know its path
            sock = socket.socket(fileno=inherited_fd)
            sock.set_inheritable(False)
        else:
            # in state_dir, which only we can write: nobody can plant a link at its name
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.bind(self.path)
            os.chmod(self.path, 0o666)  # children may run as other users
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self._sock = sock
        self._loop = loop
        loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        assert self._sock is not None
        for _ in range(64):  # bounded per wake-up so a flood cannot starve the loop
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(
                    4096, socket.CMSG_SPACE(_CREDS.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            pid = 0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, _uid, _gid = _CREDS.unpack(payload[: _CREDS.size])
            if pid <= 0:
                continue
            fields: dict[str, str] = {}
            for line in data.decode(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value
            if fields:
                self.handler(pid, fields)

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def close(self, unlink: bool = True) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            if unlink:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
