"""Stopping processes (part of host): signals, and the one stop sequence.

The sequence, for every caller: the stop signal, then SIGCONT (a stopped process
acts on nothing until it is continued), a grace until a deadline while anything of
the target is left, then SIGKILL (of the whole group, pid set or cgroup), then a
bounded wait for the exits: SIGKILL cannot be caught, and a process in
uninterruptible sleep dies only when its I/O ends, which a stop does not wait out.

It is written once, in :func:`_sequence`, which sends the signals and yields the
instants to wait until; two drivers run it: :func:`stop_target` awaits (the loop
runs on meanwhile, and a leader's exit future wakes it at once instead of a poll)
and :func:`stop_target_blocking` sleeps (start-up, before the event loop).

A target receives the signals and says whether anything of it is left: a process
group, one process, a pid set (fixed, or listed afresh each time), the members of
cgroups. The other functions here are the names the rest of the daemon has always
called, each one target and one driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from . import cgroups
from .exits import Child, is_watched, reap_orphans
from .procs import alive, in_group, list_children, marked_processes, tree_pids

POLL = 0.02  # seconds between two looks at what is left (no kernel event says "empty")
KILL_WAIT = 5.0  # how long the exits after SIGKILL are waited for


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False when the group is already gone."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_pid(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process remains in the group. kill(0) also
    succeeds for zombies, which another parent (init) may take a while to reap."""
    return signal_group(pgid, 0) and in_group(pgid)


# --- targets ---------------------------------------------------------------------


class Target:
    """What a stop reaches: ``send`` a signal to all of it; ``left``: any of it alive."""

    # a future that resolves when the target's main process exits: awaited, not polled
    exited: asyncio.Future[Any] | None = None

    def send(self, signum: int) -> None:
        raise NotImplementedError

    def left(self) -> bool:
        raise NotImplementedError


class Group(Target):
    """A process group; with its ``leader``'s exit future, which wakes the wait."""

    def __init__(self, pgid: int, leader: Child | None = None) -> None:
        self.pgid = pgid
        self.exited = leader.exited if leader is not None else None

    def send(self, signum: int) -> None:
        signal_group(self.pgid, signum)

    def left(self) -> bool:
        return group_alive(self.pgid)


class Process(Target):
    """One process, not its group (a re-exec'd master's predecessor shares it)."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.exited = child.exited

    def send(self, signum: int) -> None:
        signal_pid(self.child.pid, signum)

    def left(self) -> bool:
        # once the watcher has its status the pid may be someone else's
        return self.child.alive and alive(self.child.pid)


class Pids(Target):
    """Processes by pid: a fixed set, or a function that lists them now (so what
    appears during the stop, a stray's orphaned child, is stopped too)."""

    def __init__(self, pids: Collection[int] | Callable[[], Iterable[int]]) -> None:
        self._pids = pids

    def _now(self) -> Iterable[int]:
        return self._pids() if callable(self._pids) else self._pids

    def send(self, signum: int) -> None:
        for pid in list(self._now()):
            signal_pid(pid, signum)

    def left(self) -> bool:
        return any(alive(pid) for pid in self._now())


class Cgroup(Target):
    """Every member of some cgroups; SIGKILL through ``cgroup.kill`` (all at once,
    also what forks meanwhile, where the kernel has it)."""

    def __init__(self, *paths: str) -> None:
        self.paths = paths

    def send(self, signum: int) -> None:
        for path in self.paths:
            if signum == signal.SIGKILL:
                cgroups.kill(path)  # a write to cgroup.kill (a signal per member before 5.14)
            else:
                for pid in cgroups.procs(path):
                    signal_pid(pid, signum)

    def left(self) -> bool:
        return any(cgroups.procs(path) for path in self.paths)


class Callbacks(Target):
    """A target given as two functions (what stop_until and stop_blocking are given)."""

    def __init__(self, send: Callable[[int], object], left: Callable[[], bool]) -> None:
        self._send, self._left = send, left

    def send(self, signum: int) -> None:
        self._send(signum)

    def left(self) -> bool:
        return self._left()


# --- the sequence and its two drivers ----------------------------------------------


def _sequence(
    target: Target, signum: int | None, deadline: float, kill_wait: float
) -> Iterator[float]:
    """The stop sequence, written once: signals sent here, and each instant yielded
    is one the driver waits until while ``target.left()``. ``signum`` None: the
    target was signalled already (only the grace and the SIGKILL remain)."""
    if signum is not None:
        target.send(signum)
        target.send(signal.SIGCONT)
    yield deadline
    if target.left():
        target.send(signal.SIGKILL)
        yield time.monotonic() + kill_wait


async def stop_target(
    target: Target,
    signum: int | None,
    deadline: float,
    *,
    poll: float = POLL,
    kill_wait: float = KILL_WAIT,
) -> None:
    """Run the stop sequence, awaiting (``deadline``: time.monotonic())."""
    for until in _sequence(target, signum, deadline, kill_wait):
        exited = target.exited
        if exited is not None and not exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), max(0.0, until - time.monotonic()))
        while target.left() and (now := time.monotonic()) < until:
            await asyncio.sleep(min(poll, until - now))


def stop_target_blocking(
    target: Target,
    signum: int | None,
    deadline: float,
    *,
    poll: float = POLL,
    kill_wait: float = KILL_WAIT,
) -> None:
    """Run the stop sequence, sleeping: for start-up, before the event loop exists
    (nothing else to do meanwhile). An exit future cannot resolve here: it polls."""
    for until in _sequence(target, signum, deadline, kill_wait):
        while target.left() and (now := time.monotonic()) < until:
            time.sleep(min(poll, until - now))


# --- the names the daemon calls ------------------------------------------------------


async def terminate(child: Child, signum: int, timeout: float, *, grace_poll: float = POLL) -> None:
    """Stop a child's whole process group: ``signum``, wait, then SIGKILL; return once
    the leader's exit is known. Leftover group members (workers that outlive their
    master) get the rest of the timeout, then SIGKILL, so no orphan stays behind."""
    await stop_target(Group(child.pgid, child), signum, time.monotonic() + timeout, poll=grace_poll)
    await child.exited


async def reap_group(pgid: int, deadline: float, *, grace_poll: float = POLL) -> None:
    """The rest of the sequence for a group already signalled: wait for it to leave
    until ``deadline``, then SIGKILL it."""
    await stop_target(Group(pgid), None, deadline, poll=grace_poll)


async def stop_group(pgid: int, signum: int, deadline: float) -> None:
    """The whole sequence for a process group whose leader is gone (or not ours)."""
    await stop_target(Group(pgid), signum, deadline)


async def terminate_one(child: Child, signum: int, timeout: float) -> None:
    """Stop one process (not its group): a re-exec'd app's old master shares its
    process group with the new master, which must survive."""
    await stop_target(Process(child), signum, time.monotonic() + timeout)
    await child.exited


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (a failed re-exec's new master)."""
    Pids(tree_pids(pid)).send(signal.SIGKILL)


async def stop_until(
    send: Callable[[int], object], left: Callable[[], bool], signum: int, deadline: float
) -> None:
    """The stop sequence, awaited, for a target given as ``send`` and ``left``."""
    await stop_target(Callbacks(send, left), signum, deadline)


def stop_blocking(send: Callable[[int], object], left: Callable[[], bool], timeout: float) -> None:
    """The stop sequence with SIGTERM, blocking, for a target given as ``send`` and
    ``left``."""
    stop_target_blocking(Callbacks(send, left), signal.SIGTERM, time.monotonic() + timeout)


def stop_pids_blocking(pids: Iterable[int], timeout: float) -> None:
    """Stop processes that are not ours to wait for (a dead daemon's), by pid."""
    stop_target_blocking(Pids(list(pids)), signal.SIGTERM, time.monotonic() + timeout)


async def stop_cgroup(path: str, signum: int, deadline: float) -> list[int]:
    """Stop what is left in a generation's cgroup (``signum``, then ``cgroup.kill`` at
    ``deadline``) and remove the cgroup once empty. The pids that were left."""
    left = cgroups.procs(path)
    if left:
        await stop_target(Cgroup(path), signum, deadline)
    cgroups.remove(path)
    return left


async def stop_escaped(variable: str, marker: str, signum: int, deadline: float) -> list[int]:
    """After an instance's process group is gone: stop what its tree left behind
    outside the group (a grandchild that called setsid). Such a process was
    re-parented to us (we are a subreaper), so only our untracked children's trees
    are searched, not the host. ``signum``, then SIGKILL at ``deadline``."""
    among: set[int] = set()
    for pid in list_children():
        if not is_watched(pid):  # every generation and probe is watched by its pidfd
            among |= tree_pids(pid)
    escaped = list(marked_processes(variable, [marker], among))
    if not escaped:
        return []
    await stop_target(Pids(escaped), signum, deadline)
    reap_orphans(lambda pid: False)
    return escaped
