"""Reading processes (part of oslayer): /proc and an app's pidfile, never a signal.

Liveness, usage, trees, ancestry, start times and the marker a spawned tree carries
in its environment, each from the few /proc files it needs (a walk of one tree, not
of every process on the host, wherever that suffices).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (index 0: the state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()


def alive(pid: int) -> bool:
    """The pid is a live process (not a zombie waiting for its parent)."""
    fields = _stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] != b"Z"


def in_group(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in the process group ``pgid``: a walk of
    every /proc/PID/stat (no file lists a group's members)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def read_usage(pids: Iterable[int]) -> tuple[float, int]:
    """(CPU seconds used so far, RSS bytes) summed over ``pids``, from /proc/PID/stat
    (one small read per process: cheap enough for every instance of a big host)."""
    cpu_ticks = rss_pages = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
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


_btime: tuple[float, float] = (-1.0, 0.0)  # (monotonic when read, btime)


def _boot_time() -> float:
    """The boot time in seconds since the epoch, as /proc/stat says (it moves with the
    wall clock, so it is read again after a second; a boot of a thousand spawns reads
    the long /proc/stat once, not a thousand times)."""
    global _btime
    now = time.monotonic()
    if now - _btime[0] < 1.0:
        return _btime[1]
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                _btime = (now, float(line.split()[1]))
                return _btime[1]
    raise OSError("no btime in /proc/stat")


def ancestors(pid: int, limit: int = 32) -> list[int]:
    """pid, its parent, its grandparent... (for attributing a notify message). A parent
    younger than its child is a reused pid: the chain stops there."""
    chain: list[int] = []
    fields = _stat_fields(pid)
    while fields is not None and len(chain) < limit:
        chain.append(pid)
        try:
            ppid, started = int(fields[1]), int(fields[19])
        except (IndexError, ValueError):
            break
        if ppid <= 0 or ppid == pid:
            break
        fields = _stat_fields(ppid)
        try:
            if fields is None or int(fields[19]) > started:
                break
        except (IndexError, ValueError):
            break
        pid = ppid
    return chain


def process_identity(pid: int) -> float | None:
    """The kernel's start time of a pid (with the pid, it identifies one process), in
    seconds since the epoch: the same figure as psutil's create_time, without its
    import (a few MiB of RSS and a slower spawn)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        return float(fields[19]) / _CLOCK_TICKS + _boot_time()
    except (IndexError, ValueError, OSError):
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
    wanted = {f"{variable}={m}".encode(): m for m in markers}
    if not wanted:
        return {}
    prefix = f"{variable}=".encode()
    pids = among if among is not None else (int(e) for e in os.listdir("/proc") if e.isdigit())
    found: dict[int, str] = {}
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if prefix not in data:
            continue
        for var in data.split(b"\0"):
            marker = wanted.get(var)
            if marker is not None:
                found[pid] = marker
                break
    return found
