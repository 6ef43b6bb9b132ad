"""What a generation looks like to a successor daemon and to /status.

The adoption records (:func:`record_of`, :func:`stray_record`, and the way back,
:func:`adopted`), the drift check after a crash (:func:`drifted`), and the usage
sampler (RSS and CPU of a generation's whole process tree) that /status shows.
"""

from __future__ import annotations

import asyncio
import time

from ..config.settings import AppConfig
from ..host import cgroups, exits, procs
from ..state.handover import InstanceRecord
from .generation import Generation, config_digest
from .output import LogSink, PipeReader


def record_of(gen: Generation, running: bool, restarts: int) -> InstanceRecord:
    """What a successor daemon needs to adopt ``gen``, an instance's current one."""
    return InstanceRecord(
        running=running,
        ready_since=time.time() - (time.monotonic() - gen.ready_at) if gen.ready_at else None,
        pid=gen.child.pid,
        pgid=gen.child.pgid,
        start_time=gen.child.start_time,
        generation=gen.number,
        release=gen.release,
        restarts=restarts,
        listen_fd=gen.listen_fd,
        keeper_fd=gen.keeper_fd,
        pipe_fd=gen.reader.read_fd if gen.reader.read_fd >= 0 else None,
        listen_inode=gen.listen_inode,
        pipe_inode=gen.pipe_inode,
        marker=gen.marker,
        config_digest=gen.config_digest,
        cgroup=gen.cgroup,
    )


def stray_record(gen: Generation, shares_group: bool) -> InstanceRecord:
    """A live generation that is not current (a swap's candidate, a retiring one):
    a successor daemon stops it. One that shares its group with the current one
    (a re-exec) is stopped by its own process tree (pgid -1)."""
    return InstanceRecord(
        pid=gen.child.pid,
        pgid=-1 if shares_group else gen.child.pgid,
        start_time=gen.child.start_time,
        generation=gen.number,
        release=gen.release,
        running=False,
        marker=gen.marker,
        cgroup=gen.cgroup,
    )


def adopted(rec: InstanceRecord, sink: LogSink, loop: asyncio.AbstractEventLoop) -> Generation:
    """The generation of a process that outlived the previous daemon (upgrade or
    crash), watched again; its uptime is the one the previous daemon measured."""
    if rec.pipe_fd is not None:
        reader = PipeReader(loop, sink, adopt_fd=rec.pipe_fd)
    else:
        reader = PipeReader(loop, sink)
        reader.close()
    child = exits.watch_child(rec.pid, loop, group=rec.pgid if rec.pgid != rec.pid else None)
    gen = Generation(
        rec.generation,
        child,
        reader,
        rec.release,
        marker=rec.marker,
        config_digest=rec.config_digest,
        cgroup=rec.cgroup,
    )
    gen.listen_fd, gen.keeper_fd = rec.listen_fd, rec.keeper_fd
    gen.listen_inode, gen.pipe_inode = rec.listen_inode, rec.pipe_inode
    gen.ready_at = (
        time.monotonic() - max(0.0, time.time() - rec.ready_since)
        if rec.ready_since
        else time.monotonic()
    )
    return gen


def drifted(gen: Generation, cfg: AppConfig, release: str | None) -> str | None:
    """Why ``gen`` is not what the record says should run (a swap, deploy or update
    that a crash interrupted half-way), or None."""
    if release is not None and gen.release != release:
        return f"runs release {gen.release}, the app's release is {release}"
    if gen.config_digest is not None and gen.config_digest != config_digest(cfg):
        return "runs another config than the one recorded"
    return None


class Usage:
    """The last RSS and CPU sample of an instance's current generation."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        # (generation, when, cpu seconds, rss bytes, cpu percent) of the last sample
        self._last: tuple[Generation, float, float, int, float | None] | None = None

    def has(self, gen: Generation | None) -> bool:
        return gen is not None and self._last is not None and self._last[0] is gen

    def sample(self, gen: Generation | None, now: float) -> None:
        """Measure RSS and CPU of ``gen``'s whole process tree (a master and its
        workers); CPU percent is over the time since the last sample."""
        if gen is None or not gen.child.alive:
            self._last = None
            return
        cpu_s, rss = procs.read_usage(gen.pids())
        if gen.cgroup is not None:  # the kernel's own account of every member
            rss = cgroups.memory_bytes(gen.cgroup) or rss
            cpu_s = cgroups.cpu_seconds(gen.cgroup) or cpu_s
        percent = None
        last = self._last
        if last is not None and last[0] is gen and now > last[1]:
            percent = round(100.0 * (cpu_s - last[2]) / (now - last[1]), 1)
        self._last = (gen, now, cpu_s, rss, percent)

    def of(self, gen: Generation) -> tuple[float | None, int | None, float | None]:
        """(cpu seconds, rss bytes, cpu percent) of ``gen``'s last sample, if any."""
        if self._last is None or self._last[0] is not gen:
            return None, None, None
        return self._last[2], self._last[3], self._last[4]
