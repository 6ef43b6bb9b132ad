"""Where things live: the default state directory and the names of the files in it.

Standard library only, so that ``supctl`` can find the daemon without importing the
config machinery.
"""

from __future__ import annotations

import os

CONTROL_SOCKET = "supctl.sock"
NOTIFY_SOCKET = "notify.sock"
PIDFILE = "supervisord-lite.pid"
LOCKFILE = "supervisord-lite.lock"
STATE_FILE = "state.json"
RELEASES_DIR = "releases"
LOGS_DIR = "logs"


def notify_socket(state_dir: str) -> str:
    """The NOTIFY_SOCKET of the apps (DESIGN: in state_dir)."""
    return os.path.join(state_dir, NOTIFY_SOCKET)


def state_dir_mode(socket_mode: int, group: str | None, others_notify: bool = False) -> int:
    """state_dir's mode: private, plus the search permission the control socket's
    configured mode and group need (r-x for the group, --x for a world socket), and
    --x for others when an app running as another user must reach notify.sock."""
    mode = 0o700
    if group is not None and socket_mode & 0o070:
        mode |= 0o050
    if socket_mode & 0o007 or others_notify:
        mode |= 0o001
    return mode


def default_state_dir() -> str:
    """Root's state dir is /run/supervisord-lite; others use $XDG_RUNTIME_DIR."""
    if os.geteuid() == 0:
        return "/run/supervisord-lite"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "supervisord-lite")
    return f"/tmp/supervisord-lite-{os.geteuid()}"


def default_control_socket() -> str:
    """The control socket of a daemon running with the default state dir."""
    return os.path.join(default_state_dir(), CONTROL_SOCKET)


def fd_store_name(kind: str, key: str) -> str:
    """A valid FDNAME (printable, no ':', at most 255 chars) for an fd kept in
    systemd's fd store (an app's socket, an instance's output pipe)."""
    return f"{kind}.{key}".replace(":", "_")[:255]
