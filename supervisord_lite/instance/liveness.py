"""Liveness of a running generation: health checks, the watchdog, max_memory.

A :class:`Liveness` runs as one task per running generation (the instance cancels it
when the generation stops being current or RUNNING). It reports through the
instance's queue only: UNHEALTHY with its reason and output, and, for max_memory,
``on_memory`` (the instance then asks for a replacing swap). On a shared socket a
probe of the other instance that this one accepted and answered is credited here
(:meth:`Liveness.credit`): it counts as a passed check and resets the interval, so a
verdict costs about one connection instead of a retry per accept race lost.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config.settings import AppConfig, HealthConfig
from ..host import fds, procs
from . import probes
from .generation import Generation
from .ready import Prober
from .states import Event

# max_memory: RSS (of the whole process tree) is sampled this often, and must stay
# above the limit for this many samples in a row before the instance is replaced
_MEMORY_EVERY = 1.0
_MEMORY_SAMPLES = 3

# Liveness checks fall due on a grid of ticks that every instance shares, so that the
# checks due in one tick wake the daemon once and run side by side. Measured here
# (tests/bench/bench_probe.py), a probe alone costs the daemon about twice the CPU of
# one among four: each wake-up of an idle process pays a context switch and cold
# caches. The grid delays a check by less than a tick: under 0.25 s and under a
# tenth of its interval (ticks of shorter intervals divide the longer ones' ticks).
# The instances of one app take turns within a tick (each its own phase): on a shared
# socket, two probes at once would each be accepted by the other instance as often
# as not, and retried.
_TICK = 0.25

Post = Callable[..., None]  # (event, generation, **fields): onto the instance's queue


@dataclass(slots=True)
class Health:
    """What /status shows of the liveness checks (the instance resets ``healthy``)."""

    healthy: bool | None = None
    failures_total: int = 0


def tick_for(interval: float) -> float:
    """The tick of the shared grid for a check every ``interval`` seconds: _TICK,
    halved until it is at most a tenth of the interval."""
    tick = _TICK
    while tick > interval / 10:
        tick /= 2
    return tick


def next_tick(after: float, interval: float, phase: float = 0.0) -> float:
    """The first tick of the shared grid at or after ``after`` (monotonic seconds) for a
    check every ``interval`` seconds, ``phase`` (0 <= phase < 1) of a tick late: the
    instance's turn among its app's (see _TICK)."""
    tick = tick_for(interval)
    offset = phase * tick
    return math.ceil((after - offset) / tick) * tick + offset


def phase_of(instance: str, instances: tuple[str, ...]) -> float:
    """The turn of ``instance`` within a tick: its place among its app's instances."""
    return instances.index(instance) / len(instances) if instance in instances else 0.0


class Liveness:
    def __init__(
        self,
        gen: Generation,
        cfg: AppConfig,
        prober: Prober,
        health: Health,
        post: Post,
        swapping: Callable[[], bool],
        on_memory: Callable[[int, int], None],
    ) -> None:
        self.gen = gen
        self._cfg = cfg
        self._prober = prober
        self._health = health
        self._post = post
        self._swapping = swapping
        self._on_memory = on_memory
        self._consecutive = 0
        self._credits = 0  # answers this generation gave to the other instance's probes
        self._phase = phase_of(prober.spot.name, cfg.instances)
        self._next_check = float("inf")  # no health check: only the watchdog or memory
        if cfg.health is not None:
            self._next_check = self._due(cfg.health.interval)

    def _due(self, interval: float) -> float:
        """When the next check is due, counted from now."""
        return next_tick(time.monotonic() + interval, interval, self._phase)

    def credit(self) -> None:
        """Another instance's probe was accepted and answered by this generation."""
        if self._cfg.health is None:
            return
        self._credits += 1
        self._consecutive = 0
        self._health.healthy = True
        self._next_check = self._due(self._cfg.health.interval)

    async def run(self) -> None:
        gen, health, watchdog = self.gen, self._cfg.health, self._cfg.watchdog
        gen.last_watchdog = time.monotonic()
        limit = self._cfg.max_memory
        next_memory = time.monotonic() + _MEMORY_EVERY if limit else float("inf")
        over = 0
        while True:
            wake = min(self._next_check, next_memory)
            if watchdog is not None:
                wake = min(wake, gen.last_watchdog + watchdog)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            if limit and time.monotonic() >= next_memory:
                next_memory = time.monotonic() + _MEMORY_EVERY
                _, rss = procs.read_usage(gen.pids())  # the same reading /status shows
                over = over + 1 if rss > limit else 0
                if over >= _MEMORY_SAMPLES and not self._swapping():
                    # replace it the zero-downtime way: the new one is ready first
                    self._on_memory(rss, limit)
                    over = 0
            if watchdog is not None and time.monotonic() - gen.last_watchdog >= watchdog:
                self._post(
                    Event.UNHEALTHY, gen, reason=f"watchdog: no WATCHDOG=1 within {watchdog:g}s"
                )
                return
            if health is None or time.monotonic() < self._next_check:
                continue
            self._next_check = self._due(health.interval)
            result = await self._probe_own(health)
            if result.ok:
                self._consecutive = 0
                self._health.healthy = True
                continue
            self._consecutive += 1
            self._health.failures_total += 1
            self._health.healthy = False
            self._prober.spot.log.warning(
                "health_check_failed",
                detail=result.detail,
                consecutive=self._consecutive,
            )
            if self._consecutive >= health.failures:
                reason = f"{self._consecutive} failed health checks: {result.detail}"
                self._post(Event.UNHEALTHY, gen, reason=reason, output=gen.output())
                return

    async def _probe_own(self, check: HealthConfig) -> probes.ProbeResult:
        """One liveness verdict about the generation itself: on a shared socket,
        connections the other instance accepts say nothing about this one (they are
        credited to that one), so retry until ours accepts one or the check's timeout
        runs out (then it is "not accepting"). A credit that arrives meanwhile is the
        verdict: when both instances probe at once, each connection tends to land on
        the other one, and without this they would retry in step many times over."""
        timeout = check.timeout
        deadline = time.monotonic() + timeout
        credits = self._credits
        while True:
            remaining = max(0.05, deadline - time.monotonic())
            result = await self._prober.probe(self.gen, check, remaining)
            if not result.foreign:
                return result
            if self._credits != credits:
                return probes.ProbeResult(True, "answered the other instance's check")
            if time.monotonic() >= deadline:
                return probes.ProbeResult(
                    False, f"none of its processes accepted a connection within {timeout:g}s"
                )


def watched(cfg: AppConfig) -> bool:
    """Whether an app's running generations have anything to watch."""
    return cfg.health is not None or cfg.watchdog is not None or cfg.max_memory is not None


class Watch:
    """The liveness task of an instance's current generation (at most one)."""

    __slots__ = ("_health", "_loop", "_on_memory", "_post", "_running", "_swapping")

    def __init__(
        self,
        health: Health,
        post: Post,
        swapping: Callable[[], bool],
        on_memory: Callable[[int, int], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._health, self._post, self._swapping = health, post, swapping
        self._on_memory, self._loop = on_memory, loop
        self._running: tuple[Liveness, asyncio.Task[None]] | None = None

    def start(self, gen: Generation, cfg: AppConfig, prober: Prober) -> None:
        self.stop()
        if not watched(cfg):
            return
        live = Liveness(gen, cfg, prober, self._health, self._post, self._swapping, self._on_memory)
        self._running = (live, self._loop.create_task(live.run()))

    def stop(self) -> None:
        if self._running is not None:
            self._running[1].cancel()
            self._running = None

    def claim(self, inode: int) -> Callable[[], None] | None:
        """A probe of another instance was accepted by the socket ``inode``: when the
        watched generation holds that socket, what credits it with a passed check
        (called once the answer proved good; nothing if it is no longer watched)."""
        if self._running is None or self._running[1].done():
            return None
        live = self._running[0]
        if fds.find_fd(live.gen.pids_lazily(), f"socket:[{inode}]") is None:
            return None

        def credit() -> None:
            if self._running is not None and self._running[0] is live:
                live.credit()

        return credit
