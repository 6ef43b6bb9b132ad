"""Stopping an instance's generations: every way one of them ends, in one place.

A stop of the current generation, the leftovers of a leader that died by itself, the
retirement of the old generation after a swap, and the discard of a failed swap's
candidate. Each is the host's stop sequence (signal, CONT, grace, KILL) applied to
the group, the cgroup or the marked processes the generation left outside its group
(setsid). A :class:`Stopper` knows the instance's label and hooks, never the instance.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from ..config.settings import StopConfig
from ..host import cgroups, exits, stopping
from ..state.journal import MARK_ENV
from .generation import Generation, Runtime, instance_log


async def stop_cgroup(path: str, signum: int, deadline: float) -> list[int]:
    """Stop what is left in a generation's cgroup: ``signum``, then ``cgroup.kill`` at
    ``deadline``; remove the cgroup once empty. The pids that were left."""
    left = cgroups.procs(path)
    if left:

        def send(sig: int) -> None:
            if sig == signal.SIGKILL:
                cgroups.kill(path)  # every member at once, where the kernel can
            else:
                cgroups.signal_all(path, sig)

        def members() -> bool:
            return bool(cgroups.procs(path))

        await stopping.stop_until(send, members, signum, deadline)
        # SIGKILL cannot be caught: only the exits remain to be waited for
        await stopping.stop_until(lambda sig: None, members, 0, time.monotonic() + 5.0)
    cgroups.remove(path)
    return left


# the stops of dead leaders' leftovers under way (every instance's: the loop keeps
# only weak references to tasks)
_cleanups: set[asyncio.Task[None]] = set()


class Stopper:
    """The stop sequences of one instance's generations."""

    __slots__ = ("_current", "_label", "_loop", "_rt")

    def __init__(
        self,
        label: str,
        rt: Runtime,
        current: Callable[[], Generation | None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._label = label
        self._rt = rt
        self._current = current
        self._loop = loop

    def gone(self, gen: Generation) -> None:
        """Forget ``gen`` in the pid registry (its pid may be reused from now on)."""
        self._rt.on_generation(gen, False)

    def after_exit(self, gen: Generation, stop: StopConfig) -> None:
        """The leader died: what is left of its process group (workers, helpers) gets
        the stop signal and, after stop.timeout, SIGKILL, without delaying the respawn."""
        task = self._loop.create_task(self._reap_leftovers(gen, stop))
        _cleanups.add(task)
        task.add_done_callback(_cleanups.discard)

    async def _reap_leftovers(self, gen: Generation, stop: StopConfig) -> None:
        pgid = gen.child.pgid
        deadline = time.monotonic() + stop.timeout
        if stopping.group_alive(pgid):
            await stopping.stop_until(
                lambda sig: stopping.signal_group(pgid, sig),
                lambda: stopping.group_alive(pgid),
                stop.signal,
                deadline,
            )
        await stopping.reap_group(pgid, deadline)  # SIGKILL cannot be caught: the exits
        await self.stop_escaped(gen, stop, deadline)

    async def stop_escaped(self, gen: Generation, stop: StopConfig, deadline: float) -> None:
        """What ``gen``'s tree left outside its process group (setsid) goes with it: the
        rest of its cgroup, or else the processes that carry its marker."""
        current = self._current()
        if current is not None and (current.marker, current.cgroup) == (gen.marker, gen.cgroup):
            return  # a re-exec'd successor shares them and must stay
        escaped: list[int] = []
        if gen.cgroup is not None:
            escaped = await stop_cgroup(gen.cgroup, stop.signal, deadline)
        elif gen.marker is not None:
            escaped = await stopping.stop_escaped(MARK_ENV, gen.marker, stop.signal, deadline)
        if escaped:
            instance_log(self._label).warning("stopped_escaped_processes", pids=escaped)

    async def stop(self, gen: Generation, stop: StopConfig) -> exits.ExitStatus:
        """Stop a generation that is no longer current (a stop, a restart); its exit."""
        deadline = time.monotonic() + stop.timeout
        if gen.child.alive:
            await stopping.terminate(gen.child, stop.signal, stop.timeout)
        else:  # the leader is gone: what is left of its group
            await stopping.stop_group(gen.child.pgid, stop.signal, deadline)
        await self.stop_escaped(gen, stop, deadline)
        gen.reader.drain()
        self.gone(gen)
        return gen.child.exited.result()

    async def retire(self, old: Generation, stop: StopConfig, reexec: bool) -> None:
        """A swap's old generation, once the new one is current."""
        if reexec:
            # the old master shares its group with the new one: signal it alone
            await stopping.terminate_one(old.child, stop.signal, stop.timeout)
        else:
            deadline = time.monotonic() + stop.timeout
            await stopping.terminate(old.child, stop.signal, stop.timeout)
            await self.stop_escaped(old, stop, deadline)
        self.gone(old)

    async def discard(self, new: Generation, reexec: bool) -> None:
        """Kill a generation that failed its swap; the current one is untouched."""
        if reexec:
            stopping.kill_tree(new.child.pid)
            await new.child.exited
        else:
            await stopping.terminate(new.child, signal.SIGKILL, 5.0)
        current = self._current()
        shared = current is not None and current.cgroup == new.cgroup  # a re-exec
        if new.cgroup is not None and not shared:
            await stop_cgroup(new.cgroup, signal.SIGKILL, time.monotonic())
        self.gone(new)

    def kill_now(self, new: Generation, reexec: bool) -> None:
        """A swap was cancelled (a stop) before its candidate became current."""
        if reexec:
            stopping.kill_tree(new.child.pid)
        else:
            stopping.signal_group(new.child.pgid, signal.SIGKILL)
        self.gone(new)
