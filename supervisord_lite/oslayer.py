"""The operating system, as the rest of the daemon sees it: a facade.

This module is only a facade: it re-exports the names of oslayer's parts, so
callers keep one import (``from . import oslayer``). Together the parts are the only
place that forks, sends signals or reads /proc about processes (cgroups.py, which
owns the cgroup tree, also writes its ``cgroup.kill``); each owns one thing:

- ``os_spawn``: fork / posix_spawn and the child's set-up; exec probes' commands
- ``os_exits``: exit watching (a pidfd per child), the orphan reaper, the subreaper
- ``os_proc``: reading processes (/proc stat, start time, tree, usage, ancestors,
  environment markers) and an app's pidfile
- ``os_stop``: signals and the one stop sequence (signal, CONT, grace, KILL, wait)
  for a process group, a process, a pid set or a cgroup, awaited or blocking
- ``os_fds``: listening sockets, another process's descriptors (pidfd_getfd), and
  which process accepted a connection (sock_diag, with /proc's fallback)
"""

from __future__ import annotations

from .os_exits import (
    Child,
    ExitStatus,
    reap_orphans,
    set_child_subreaper,
    watch_child,
)
from .os_fds import (
    _server_socket_inode,
    accepted_by,
    bind_listener,
    find_fd,
    take_fd,
)
from .os_proc import (
    alive,
    ancestors,
    direct_children,
    in_instance,
    list_children,
    marked_processes,
    process_identity,
    read_usage,
    tree_pids,
)
from .os_spawn import SpawnSpec, call_as, read_as, run_command, spawn
from .os_stop import (
    Cgroup,
    Group,
    Pids,
    Process,
    Target,
    group_alive,
    kill_tree,
    reap_group,
    signal_group,
    signal_pid,
    stop_blocking,
    stop_cgroup,
    stop_escaped,
    stop_group,
    stop_pids_blocking,
    stop_target,
    stop_target_blocking,
    stop_until,
    terminate,
    terminate_one,
)

__all__ = [
    "Cgroup",
    "Child",
    "ExitStatus",
    "Group",
    "Pids",
    "Process",
    "SpawnSpec",
    "Target",
    "_server_socket_inode",
    "accepted_by",
    "alive",
    "ancestors",
    "bind_listener",
    "call_as",
    "direct_children",
    "find_fd",
    "group_alive",
    "in_instance",
    "kill_tree",
    "list_children",
    "marked_processes",
    "process_identity",
    "read_as",
    "read_usage",
    "reap_group",
    "reap_orphans",
    "run_command",
    "set_child_subreaper",
    "signal_group",
    "signal_pid",
    "spawn",
    "stop_blocking",
    "stop_cgroup",
    "stop_escaped",
    "stop_group",
    "stop_pids_blocking",
    "stop_target",
    "stop_target_blocking",
    "stop_until",
    "take_fd",
    "terminate",
    "terminate_one",
    "tree_pids",
    "watch_child",
]
