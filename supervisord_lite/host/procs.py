"""Reading processes (part of host): psutil, /proc where it is hot, an app's pidfile.

The only module that imports psutil. psutil answers the status of a pid, its start
time (with the pid, the identity of one process), its ancestors, its environment,
and the daemon's own figures for /metrics. Two facts stay direct reads of /proc,
each with the figure that keeps it (timeit, best of 7, a ``sleep`` child, psutil
7.2, on the two-core development host with about 100 processes):

- the children of a process, walked through ``/proc/PID/task/*/children``
  (:func:`direct_children`, :func:`tree_pids`): psutil's ``children()`` reads the
  parent of every process on the host (970 µs for our children against 12 µs here,
  and the host's size multiplies it), and the walk is on every attributed probe
  (``Generation.pids_lazily``, bench_probe/bench_fleet), every usage sample and
  every SIGCHLD orphan look;
- CPU time and RSS, from one read of ``/proc/PID/stat`` (:func:`read_usage`): 8 µs
  a process against 42 µs for ``psutil.Process(pid)`` + ``oneshot()`` ``cpu_times``
  and ``memory_info`` (28 µs with the Process kept), and the sampler measures every
  instance once a second while /status is watched: at 1,000 instances 8 against
  42 ms of the daemon's CPU a second, in slices that a ``GET /status`` (bench_scale's
  p99 at 1,000 instances) may wait behind.

Each fact has one reader here: the daemon's own CPU and RSS for /metrics come from
:func:`read_usage` too. What psutil costs where it took over (same timing): the
status of a pid 22 µs (the direct read was 8), a start time 22 µs (8), the
ancestors of a pid 0.43 ms (0.05; only for a notify message from a worker), the
host-wide marker scan 3.3 ms (0.4; once, after a crashed daemon); a process
group's liveness got cheaper, 0.07-0.09 ms (0.6-0.8), by asking each pid's group
of the kernel instead of reading its stat.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from typing import NamedTuple

import psutil

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def alive(pid: int) -> bool:
    """The pid is a live process (not a zombie waiting for its parent)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def in_group(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in the process group ``pgid``: a look at
    every process's group (no file lists a group's members; getpgid is a system
    call, not a read of each one's stat)."""
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and alive(pid):
                return True
        except OSError:
            continue
    return False


def read_usage(pids: Iterable[int]) -> tuple[float, int]:
    """(CPU seconds used so far, RSS bytes) summed over ``pids``, from /proc/PID/stat
    (one small read per process: cheap enough for every instance of a big host)."""
    cpu_ticks = rss_pages = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # the fields after the command name, which may hold spaces and parentheses
        fields = data[data.rfind(b")") + 2 :].split()
        try:
            cpu_ticks += int(fields[11]) + int(fields[12])  # utime, stime
            rss_pages += int(fields[21])
        except (IndexError, ValueError):
            continue
    return cpu_ticks / _CLOCK_TICKS, rss_pages * _PAGE_SIZE


def direct_children(pid: int) -> set[int]:
    """The children of one process (from /proc/PID/task/*/children)."""
    found: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def list_children() -> list[int]:
    """Pids of our direct children (zombies included), cheaply from /proc."""
    return sorted(direct_children(os.getpid()))


def tree_pids(pid: int) -> set[int]:
    """A process and all its descendants, walked through /proc/PID/task/*/children
    (cheap: it reads only the tree, not every process on the host)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(direct_children(p))
    return found


def in_instance(pid: int, root: int, session: int) -> bool:
    """Whether ``pid`` is one of an instance's processes: a descendant of ``root``, or
    (a helper that daemonized) a member of ``root``'s own session ``session``. Only
    descendants of a session's leader can join it, so an app cannot name outsiders."""
    if pid in tree_pids(root):
        return True
    try:
        return os.getsid(root) == session and os.getsid(pid) == session
    except OSError:
        return False


def ancestors(pid: int, limit: int = 32) -> list[int]:
    """pid, its parent, its grandparent... (for attributing a notify message). A parent
    younger than its child is a reused pid: the chain stops there (psutil's
    ``parents()`` checks that)."""
    try:
        proc = psutil.Process(pid)
        chain = [pid, *(p.pid for p in proc.parents())]
    except psutil.Error:
        return []
    return chain[:limit]


def process_identity(pid: int) -> float | None:
    """The kernel's start time of a pid (with the pid, it identifies one process), in
    seconds since the epoch (psutil's ``create_time``: 21 µs, the direct read was 12)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def marked_processes(
    variable: str, markers: Iterable[str], among: Iterable[int] | None = None
) -> dict[int, str]:
    """Processes whose environment carries ``variable=MARKER`` for one of ``markers``
    (pid -> marker), among ``among`` or else every process on the host.

    The marker travels with a spawned tree through fork and exec, also into a process
    that left its session, so a stop or a successor daemon finds what a process group
    or the record alone would miss.
    """
    wanted = set(markers)
    if not wanted:
        return {}
    pids = among if among is not None else psutil.pids()
    found: dict[int, str] = {}
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            marker = psutil.Process(pid).environ().get(variable)
        except psutil.Error:
            continue
        if marker in wanted:
            found[pid] = marker
    return found


class OwnFigures(NamedTuple):
    """The daemon's own process, as prometheus_client's ProcessCollector names it."""

    cpu_seconds: float
    resident_bytes: int
    virtual_bytes: int
    start_time: float
    open_fds: int
    max_fds: float  # inf when unlimited


def own_figures() -> OwnFigures | None:
    """The daemon's own CPU, memory, start time and descriptors (None when /proc
    cannot be read: no figures rather than wrong ones)."""
    pid = os.getpid()
    try:
        me = psutil.Process(pid)
        virtual, fds, start = me.memory_info().vms, me.num_fds(), me.create_time()
    except psutil.Error:
        return None
    cpu, rss = read_usage([pid])
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return OwnFigures(
        cpu, rss, virtual, start, fds, float("inf") if soft == resource.RLIM_INFINITY else soft
    )
