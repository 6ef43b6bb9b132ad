"""When the RSS and CPU that ``/status`` and ``supctl status`` show are measured.

On demand, so that nobody looking costs nothing: a status request measures only a
generation that has no sample yet (a start, a respawn), and starts a sampler task
that measures every instance once a second until nobody has asked for a status for
:data:`WATCHED` seconds. The sampler measures :data:`SLICE` instances per turn of
the event loop, so no request (at 1,000 instances, a round is tens of ms of
``/proc`` reading) waits for a whole round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

__all__ = ["UsageSampler"]

EVERY: Final = 1.0  # seconds between two samples of every instance
WATCHED: Final = 5.0  # the sampler stops this long after the last status request
SLICE: Final = 50  # instances sampled per turn of the event loop


class Sampled(Protocol):
    def sample_usage(self, now: float, missing_only: bool = False) -> None: ...


class UsageSampler:
    """Samples ``instances()`` while statuses are asked for."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        instances: Callable[[], Iterable[Sampled]],
        every: float = EVERY,
        watched: float = WATCHED,
    ) -> None:
        self._loop = loop
        self._instances = instances
        self._every = every
        self._watched = watched
        self._asked_at = -watched
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def asked(self) -> None:
        """A status is being taken: sample what has no sample, keep the sampler going."""
        now = time.monotonic()
        self._asked_at = now
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = self._loop.create_task(self._run())
        for inst in self._instances():
            inst.sample_usage(now, missing_only=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stop(self) -> None:
        """For the daemon's shutdown: no more sampling."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while time.monotonic() - self._asked_at < self._watched:
            started = time.monotonic()
            insts = list(self._instances())
            for k in range(0, len(insts), SLICE):
                await asyncio.sleep(0)
                now = time.monotonic()
                for inst in insts[k : k + SLICE]:
                    inst.sample_usage(now)
            await asyncio.sleep(max(0.0, self._every - (time.monotonic() - started)))
