"""Watching exits (part of host): a child's exit future, and the orphan reaper.

Exits are seen through a pidfd added to the event loop: no polling, no thread per
child, and never ``waitpid(-1)``. The supervisor is a child subreaper, and orphans
that it inherits (an app's stray grandchildren, a re-executed master's predecessor)
are reaped by pid on SIGCHLD (found by a ``waitid(P_ALL, WNOWAIT)`` peek, which
reaps nothing, or a listing), never taking a watched child's status from its watcher.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from .procs import list_children, process_identity

_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class ExitStatus:
    """How a process ended: ``code`` for a normal exit, ``signal`` when killed."""

    code: int | None = None
    signal: int | None = None

    @property
    def as_int(self) -> int | None:
        """Exit code, or minus the signal number (the wire and /status form); None
        when unknown (a process we adopted but did not start has no waitable status)."""
        if self.code is not None:
            return self.code
        return -self.signal if self.signal is not None else None

    @property
    def clean(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        if self.code is None and self.signal is None:
            return "exited (status unknown: adopted from a previous daemon)"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by {name}"
        return f"exited with status {self.code}"


@dataclass(slots=True)
class Child:
    """A spawned process: its pid (also its process group) and its exit future."""

    pid: int
    started_at: float  # time.monotonic() at spawn
    start_time: float  # the kernel's create time, to recognise the process
    exited: asyncio.Future[ExitStatus]
    _pidfd: int = -1
    group: int | None = None  # set when the process is not its group's leader

    @property
    def pgid(self) -> int:
        return self.group if self.group is not None else self.pid

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def uptime(self) -> float:
        return time.monotonic() - self.started_at


def set_child_subreaper() -> None:
    """Make orphaned descendants re-parent to us (so re-exec'd masters stay ours)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def watch_child(pid: int, loop: asyncio.AbstractEventLoop, group: int | None = None) -> Child:
    """Track a process through a pidfd; its ``exited`` future resolves on exit.

    Usually a child of ours; also a re-executed master (a grandchild until its
    parent exits and it is re-parented to us, the subreaper). The exit status is
    known only for our own children (others report code -1).
    """
    start_time = process_identity(pid) or 0.0
    child = Child(pid, time.monotonic(), start_time, loop.create_future(), group=group)
    try:
        child._pidfd = os.pidfd_open(pid)
        _watched.add(pid)
    except ProcessLookupError:
        # already gone (and a zombie, since it is our child): reap it now
        _, status = os.waitpid(pid, 0)
        child.exited.set_result(_status_from_wait(status))
        return child
    loop.add_reader(child._pidfd, _on_pidfd_readable, child, loop)
    return child


def _status_from_wait(status: int) -> ExitStatus:
    if os.WIFSIGNALED(status):
        return ExitStatus(signal=os.WTERMSIG(status))
    return ExitStatus(code=os.waitstatus_to_exitcode(status))


def _on_pidfd_readable(child: Child, loop: asyncio.AbstractEventLoop) -> None:
    loop.remove_reader(child._pidfd)
    try:
        info = os.waitid(os.P_PIDFD, child._pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        info = None  # not our child (adopted after a crash): its status is not ours to see
    finally:
        os.close(child._pidfd)
        child._pidfd = -1
        _watched.discard(child.pid)
    result = ExitStatus()
    if info is not None:
        if info.si_code == os.CLD_EXITED:
            result = ExitStatus(code=info.si_status)
        else:
            result = ExitStatus(signal=info.si_status)
    if not child.exited.done():
        child.exited.set_result(result)


# pids whose exit a pidfd watcher owns (instances, probes, the upgrade's check): the
# orphan reaper never takes their status away from that watcher
_watched: set[int] = set()


def is_watched(pid: int) -> bool:
    """A pidfd watcher owns this pid's exit (every generation and probe has one)."""
    return pid in _watched


def reap_orphans(tracked: Callable[[int], bool]) -> list[int]:
    """Reap exited children that no pidfd watches (orphans we inherited as subreaper)."""
    reaped: list[int] = []
    # the common case, on every SIGCHLD: the exited child was a watched one, already
    # reaped by its watcher, or an orphan; peeking at the first waitable child
    # (WNOWAIT) finds either without listing all our children (O(N) on a big host)
    for _ in range(1000):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid == 0:
            return reaped
        if info.si_pid in _watched or tracked(info.si_pid):
            break  # its watcher takes it; others may wait behind it: look at them all
        try:
            got, _ = os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            break
        if not got:
            break
        reaped.append(got)
    for pid in list_children():
        if pid in _watched or tracked(pid):
            continue
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got:
            reaped.append(got)
    return reaped
