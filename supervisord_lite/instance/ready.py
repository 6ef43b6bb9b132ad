"""Readiness: running an instance's checks against one generation until it is ready.

A :class:`Prober` runs one check (HTTP, TCP or exec) against a generation, attributed
to that generation's processes where someone else may answer on the address (a
shared socket, a swap's two generations, a supervisor-held socket). A connection
another instance accepted on the shared socket is claimed for it at once
(``Runtime.claim_foreign``), and credited to it if its answer is good (it proves that
one serves). :func:`wait_ready` is the readiness of a new generation:
notify, delay, then probes until one passes, the process exits or time runs out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..config.settings import CheckConfig, ReadyConfig
from ..config.values import render
from ..errors import SpawnError
from ..host import spawning
from . import probes
from .generation import Generation, Runtime, Spot
from .spawn import app_spawn_spec

_NO_CHECK_YET = "no check has run"


class Prober:
    """The checks of one instance (its config as of when the prober was made)."""

    def __init__(
        self,
        spot: Spot,
        rt: Runtime,
        swapping: Callable[[], bool],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.spot = spot
        self._rt = rt
        self._swapping = swapping
        self._loop = loop

    def _owner(self, gen: Generation) -> probes.Owner | None:
        """Attribute probes to ``gen`` when someone else may answer on that address
        (with a supervisor-held socket always: the kernel accepts into our backlog
        even if the app is hung)."""
        listen = self.spot.listen
        if listen is None or listen.is_unix:
            return None
        held = self.spot.cfg.socket_activation and bool(self._rt.sockets)
        if held or self._rt.shared_socket or self._swapping():
            return gen.pids_lazily
        return None

    def _claim(self, inode: int) -> Callable[[], None] | None:
        return self._rt.claim_foreign(self.spot.name, inode)

    def _credits(self, check: CheckConfig) -> bool:
        """A foreign answer to ``check`` is worth crediting: the other instance was
        asked its own liveness question (the same check; a readiness check that asks
        something else, or a TCP accept for an HTTP check, proves nothing)."""
        health = self.spot.cfg.health
        return (
            self._rt.shared_socket
            and health is not None
            and (check.http, check.tcp) == (health.http, health.tcp)
        )

    async def probe(
        self, gen: Generation, check: CheckConfig, timeout: float
    ) -> probes.ProbeResult:
        values = self.spot.values(gen.number, gen.release)
        owner = self._owner(gen)
        if check.http or check.tcp:
            claim = self._claim if owner is not None and self._credits(check) else None
            if check.http:
                result = await probes.probe_http(render(check.http, values), timeout, owner, claim)
            else:
                assert check.tcp is not None
                result = await probes.probe_tcp(render(check.tcp, values), timeout, owner, claim)
            if result.foreign and result.answered and result.credit is not None:
                result.credit()
            return result
        assert check.exec is not None
        argv = tuple(render(a, values) for a in check.exec)
        try:
            spec = await app_spawn_spec(
                self.spot, gen.number, gen.release, check.exec, gen.cgroup, self._loop
            )
        except SpawnError as exc:
            return probes.ProbeResult(False, f"{argv[0]}: {exc.message}")

        def run(a: tuple[str, ...], t: float) -> asyncio.Future[tuple[int | None, str]]:
            return asyncio.ensure_future(spawning.run_command(spec, t, self._loop))

        return await probes.probe_exec(argv, timeout, run)


async def wait_ready(gen: Generation, prober: Prober) -> tuple[bool, str]:
    """Run the ready checks for ``gen``; (True, "") or (False, why)."""
    ready = prober.spot.cfg.ready
    deadline = time.monotonic() + ready.timeout
    exited = gen.child.exited

    async def until_exit(aw: Awaitable[Any], seconds: float) -> str | None:
        """Await ``aw`` unless the process exits or time runs out first."""
        task = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait(
            {task, exited}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return None
        task.cancel()
        if exited in done:
            return f"{exited.result().describe()} before it was ready"
        return f"not ready within {ready.timeout:g}s"

    if ready.notify:
        why = await until_exit(gen.notified_ready().wait(), deadline - time.monotonic())
        if why:
            return False, why + (
                "" if "exited" in why or "killed" in why else " (no READY=1 on NOTIFY_SOCKET)"
            )
    if ready.delay:
        why = await until_exit(asyncio.sleep(ready.delay), deadline - time.monotonic())
        if why:
            return False, why
    if ready.http or ready.tcp or ready.exec:
        return await _probe_until(gen, prober, ready, deadline)
    if exited.done():
        return False, f"{exited.result().describe()} before it was ready"
    return True, ""


async def _probe_until(
    gen: Generation, prober: Prober, ready: ReadyConfig, deadline: float
) -> tuple[bool, str]:
    pause = 0.01
    last = _NO_CHECK_YET
    while True:
        if gen.child.exited.done():
            return False, f"{gen.child.exited.result().describe()} before it was ready"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, f"not ready within {ready.timeout:g}s: {last}"
        result = await prober.probe(gen, ready, min(remaining, 5.0))
        if result.ok and not gen.child.exited.done():
            return True, ""
        if result.foreign:
            continue  # the other process won this accept race: try again at once
        if time.monotonic() >= deadline and last != _NO_CHECK_YET:
            continue  # cut short by the deadline: the process's own last answer says more
        last = result.detail
        sleep_for = min(pause, max(0.0, deadline - time.monotonic()))
        exited = gen.child.exited
        await asyncio.wait({exited}, timeout=sleep_for)
        pause = min(pause * 1.5, 0.25)
