"""The state directory: created private, locked by the running daemon, its pidfile.

The lock is an exclusive flock on a lock file, released by the kernel when the
process dies, so a stale pidfile never blocks a restart.
"""

from __future__ import annotations

import errno
import fcntl
import os

from .. import paths
from ..errors import DaemonLocked, SupervisorError
from ..host import files


def acquire_state_dir(state_dir: str, mode: int = 0o700, gid: int | None = None) -> int:
    """Create ``state_dir`` private (``mode``, group ``gid``) and lock it; raise
    DaemonLocked if another daemon has it, SupervisorError if another user owns it."""
    try:
        files.make_private_dir(state_dir, mode, gid)
    except files.UnsafeFile as exc:
        raise SupervisorError(f"state_dir: {exc.strerror}") from None
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(os.path.join(state_dir, paths.LOCKFILE), flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        data = files.read_small(os.path.join(state_dir, paths.PIDFILE), 64) or b""
        pid = data.decode("ascii", errors="replace").strip()
        holder = f" (pid {pid})" if pid.isdigit() else ""
        os.close(fd)
        raise DaemonLocked(
            f"another supervisord-lite{holder} is running with state_dir {state_dir}"
        ) from None
    return fd


def write_pidfile(state_dir: str) -> None:
    """STATE_DIR/supervisord-lite.pid, 0644 (a pid is no secret; state_dir's own mode
    decides who reaches it), replaced atomically: nothing planted there is followed."""
    dir_fd = files.open_dir(state_dir)
    try:
        files.write_atomic(dir_fd, paths.PIDFILE, f"{os.getpid()}\n".encode(), 0o644)
    finally:
        os.close(dir_fd)
