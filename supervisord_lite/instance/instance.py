"""One instance of an app (``web:primary``): what the rest of the daemon talks to.

An :class:`Instance` is the interface: commands (start, stop, swap: each a message
to its actor, answered once carried out), a read-only view of the actor's state (its
properties: nobody but the actor writes it), ``snapshot()`` for /status, the records a
successor daemon adopts, and its captured output (``output``: the sink itself). Its
state has one writer, the :class:`~actor.Actor` (one task taking one message at a
time through the tables in ``states``); callers never reach the actor or its
generations' fields.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from ..config.settings import AppConfig
from ..host import stopping
from ..snapshots import InstanceStatus
from ..state.handover import InstanceRecord
from . import probes
from .actor import Actor
from .generation import OUTPUT_LINES, Generation, Runtime, apply_notify
from .output import LogSink
from .records import Usage, drifted, record_of, stray_record
from .state import State
from .states import Event


class Instance:
    """The state owner of one instance; talk to it only through its methods."""

    __slots__ = ("_a", "_usage", "name")

    def __init__(
        self,
        cfg: AppConfig,
        name: str,
        runtime: Runtime,
        loop: asyncio.AbstractEventLoop,
        release: str | None = None,
    ) -> None:
        self.name = name
        self._a = Actor(cfg, name, runtime, loop, release)
        self._usage = Usage()

    # --- what callers may read ------------------------------------------------------

    @property
    def app(self) -> str:
        return self._a.rt.app

    @property
    def label(self) -> str:
        return self._a.label

    @property
    def state(self) -> State:
        return self._a.state

    @property
    def cfg(self) -> AppConfig:
        """The config the next spawn runs."""
        return self._a.cfg

    @property
    def release(self) -> str | None:
        """The release the next spawn runs."""
        return self._a.release

    @property
    def generation(self) -> int:
        """The current generation's number."""
        return self._a.generation

    @property
    def failures(self) -> int:
        """Consecutive failures (the backoff counts them)."""
        return self._a.failures

    @property
    def last_error(self) -> str | None:
        return self._a.last_error

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The supervisor-held listening sockets."""
        return self._a.rt.sockets

    @property
    def swapping(self) -> bool:
        return self._a.swapping

    @property
    def pid(self) -> int | None:
        """The current generation's main pid (None when there is none)."""
        return self._a.current.pid if self._a.current is not None else None

    def current_generation(self) -> Generation | None:
        """The current generation (for the history's swap timings; not to be changed)."""
        return self._a.current

    # --- commands -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start (if needed) and return once ready; raise OperationFailed if the
        attempt fails (the instance then retries on its own per its backoff)."""
        await self._a.command(Event.START)

    async def stop(self) -> None:
        """Stop gracefully; return once the process group is gone."""
        await self._a.command(Event.STOP)

    async def swap(self, cfg: AppConfig | None = None, release: str | None = None) -> None:
        """Replace the running process by a new generation without downtime, with a new
        config (``update``) or release (``deploy``) when given; a stopped instance just
        takes them for its next start."""
        if self._a.state is State.STOPPED and (cfg is not None or release is not None):
            self._a.retarget(cfg, release)
            return
        await self._a.command(Event.SWAP, cfg=cfg, release=release)

    async def wait_for(self, predicate: Callable[[State], bool]) -> State:
        """Return once the state satisfies ``predicate`` (at once if it does)."""
        return await self._a.wait_for(predicate)

    def send_signal(self, signum: int) -> list[int]:
        """Signal the current process (not its group, like kill(1)); the pids reached."""
        gen = self._a.current
        if gen is None or not gen.child.alive:
            return []
        return [gen.pid] if stopping.signal_pid(gen.pid, signum) else []

    def notify(self, gen: Generation, fields: dict[str, str]) -> None:
        """A NOTIFY_SOCKET message from one of ``gen``'s processes."""
        apply_notify(gen, fields, self._a.log)

    def claim(self, inode: int) -> Callable[[], None] | None:
        """A probe of another instance on the shared socket was accepted by the socket
        ``inode``: if this one's current generation holds it, what passes this one's
        liveness check once that answer proves good (App routes these)."""
        return self._a.claim(inode)

    async def probe_health(self) -> probes.ProbeResult | None:
        """Run the liveness check once against the current generation (None: none set)."""
        gen = self._a.current
        if self._a.cfg.health is None or gen is None:
            return None
        return await self._a.prober().probe(gen, self._a.cfg.health, self._a.cfg.health.timeout)

    async def close(self) -> None:
        """Stop the actor task (after the instance has been stopped)."""
        self._a.close()
        self._a.sink.end_followers()
        self._a.sink.close()

    # --- output ---------------------------------------------------------------------

    @property
    def output(self) -> LogSink:
        """The instance's captured output (its file, its tail, its followers)."""
        return self._a.sink

    def last_output(self, n: int = OUTPUT_LINES) -> list[str]:
        if self._a.current is not None:
            return self._a.current.output(n)
        return self._a.sink.last(n)

    # --- snapshots and records -----------------------------------------------------------

    def sample_usage(self, now: float, missing_only: bool = False) -> None:
        """Measure RSS and CPU of the current generation's process tree; with
        ``missing_only`` only if it has no sample yet."""
        if missing_only and (self._a.current is None or self._usage.has(self._a.current)):
            return
        self._usage.sample(self._a.current, now)

    def snapshot(self) -> InstanceStatus:
        gen = self._a.current
        alive = gen is not None and gen.child.alive
        cpu_s, rss, cpu = self._usage.of(gen) if gen is not None and alive else (None, None, None)
        uptime = None
        if gen is not None and alive and gen.ready_at is not None:
            uptime = time.monotonic() - gen.ready_at
            if gen.ready_wall is None:  # computed once: a start time must not jitter
                gen.ready_wall = time.time() - uptime
        return InstanceStatus(
            app=self._a.rt.app,
            name=self.name,
            state=self._a.state.value,
            pid=gen.pid if gen is not None and alive else None,
            generation=self._a.generation,
            uptime_s=uptime,
            restarts=self._a.restarts,
            exit_status=self._a.last_exit.as_int if self._a.last_exit else None,
            ready=self._a.state is State.RUNNING,
            healthy=self._a.health.healthy if self._a.cfg.health is not None else None,
            release=gen.release if gen is not None and alive else self._a.release,
            listen=self._a.listen.address if self._a.listen else None,
            rss_bytes=rss,
            cpu_percent=cpu,
            health_failures=self._a.health.failures_total,
            last_error=self._a.last_error,
            swapping=self.swapping,
            status_text=gen.status_text if gen is not None and alive else None,
            cpu_seconds=cpu_s,
            ready_since=gen.ready_wall if uptime is not None and gen is not None else None,
            memory_replacements=self._a.memory_replacements,
        )

    def adopt(self, rec: InstanceRecord) -> None:
        """Take back a process that outlived the previous daemon (upgrade or crash):
        it becomes the current generation, RUNNING (its readiness was established by
        the daemon that started it), and liveness checks resume at once."""
        self._a.adopt(rec)

    def record(self) -> InstanceRecord | None:
        """What a successor daemon needs to adopt the current generation."""
        gen = self._a.current
        if gen is None or not gen.child.alive:
            return None
        return record_of(gen, self._a.state is State.RUNNING, self._a.restarts)

    def record_of(self, gen: Generation) -> tuple[bool, InstanceRecord] | None:
        """The record of one of this instance's live generations: (is it the current
        one, its record); a successor adopts the current one and stops the others."""
        if gen is self._a.current:
            rec = self.record()
            return (True, rec) if rec is not None else None
        if not gen.child.alive:
            return None
        shares = self._a.current is not None and gen.child.pgid == self._a.current.child.pgid
        return False, stray_record(gen, shares)

    def drifted(self, release: str | None) -> str | None:
        """Why the running generation is not what the record says should run (a swap,
        deploy or update that a crash interrupted half-way), or None."""
        gen = self._a.current
        if gen is None or not gen.child.alive or self._a.state is not State.RUNNING:
            return None
        return drifted(gen, self._a.cfg, release)
