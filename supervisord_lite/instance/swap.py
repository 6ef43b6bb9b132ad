"""One hot swap's processes: boot generation g+1 beside g, promote it, retire g.

A :class:`SwapRun` gets the old generation, where the new one runs (a Spot with the
config and release the swap applies), the current and the new number, and three hooks into the
instance's actor: ``phase`` (the swap's phase, which decides what becomes of the
messages that arrive meanwhile: states.SWAP_TABLE), ``promote`` (g+1 is ready: make
it current) and the :class:`~stop.Stopper`. It never sees the instance.

``kind`` says why (reload, update, deploy, max_memory, replace). A replacement of an
unhealthy process is always a fresh process beside it (a hung master cannot be
trusted to re-exec itself), except for an app that cannot run twice.

With ``reload: restart`` (apps that bind their own fixed port, or otherwise cannot
overlap) the same run goes the other way round: g is stopped first (phase RETIRING:
a stop or g's exit wait for the run), then g+1 is started (BOOTING) and gated on
readiness; if it fails, it is killed and g's own config and release are started
again, gated the same way (ROLLING_BACK), so the instance serves the old release
rather than nothing. The other instances serve meanwhile (the app restarts one
instance at a time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config.settings import AppConfig
from ..errors import OperationFailed, SpawnError
from . import swap_report
from .generation import Generation, Runtime, Spot
from .output import LogSink
from .ready import Prober, wait_ready
from .spawn import follow_reexec, spawn
from .states import SwapPhase
from .stop import Stopper


@dataclass
class SwapPlan:
    """What the actor keeps of a running swap: the config and release it replaced
    (restored if it fails), and whether g must be replaced afresh if it fails."""

    undo: tuple[AppConfig, str | None]
    replace_if_fails: bool = False  # liveness gave up on g during g's swap


class SwapRun:
    def __init__(
        self,
        *,
        spot: Spot,
        rt: Runtime,
        sink: LogSink,
        old: Generation | None,
        kind: str,
        generation: int,
        numbers: Callable[[], int],
        release: str | None,
        prober: Prober,
        stopper: Stopper,
        phase: Callable[[SwapPhase], None],
        promote: Callable[[Generation], None],
        ended: Callable[[SwapRun], None],
        loop: asyncio.AbstractEventLoop,
        undo: tuple[AppConfig, str | None] | None = None,
        unwatch: Callable[[], None] = lambda: None,
    ) -> None:
        self.spot, self._rt, self._sink, self.old = spot, rt, sink, old
        self._numbers, self._release, self._prober = numbers, release, prober
        self._stopper, self._phase, self._promote, self._loop = stopper, phase, promote, loop
        self._ended = ended
        self._undo = undo or (spot.cfg, release)  # what a failed restart starts again
        self._unwatch = unwatch  # g's liveness checks end before a restart stops it
        self.replacing = kind == "replace"
        reload = spot.cfg.reload
        self.restart = reload.restart and old is not None
        self.reexec = reload.signal is not None and old is not None and not self.replacing
        method = "restart" if self.restart else "reexec" if self.reexec else "swap"
        self.report = swap_report.SwapReport(
            spot.label,
            kind,
            method,
            old.pid if old is not None else None,
            generation,
            release,
        )
        self.new: Generation | None = None
        self.ok = False  # the candidate passed readiness
        self.promoted = False
        self.rolled_back = False  # a failed restart's instance runs g's config again
        self.outcome = swap_report.KEPT_OLD
        self.reason: str | None = None

    async def run(self, reply: asyncio.Future[Any] | None) -> None:
        """The whole swap, answering ``reply``: None, OperationFailed (the old
        generation kept, or gone: a cold restart) or, cancelled by a stop, an error
        too (the candidate is killed); then ``ended``."""
        try:
            await self._run()
        except asyncio.CancelledError:
            if self.new is not None and not self.promoted:
                self._stopper.kill_now(self.new, self.reexec)
            self.outcome, self.reason = swap_report.CANCELLED, "cancelled"
            _answer(reply, OperationFailed(f"{self.spot.label}: swap cancelled by a stop"))
            raise
        except OperationFailed as exc:
            _answer(reply, exc)
        else:
            _answer(reply, None)
        finally:
            self._ended(self)

    async def _run(self) -> None:
        if self.restart:
            await self._run_restart()
            return
        old, new = self.old, None
        try:
            new = await self._candidate()
        except SpawnError as exc:
            self.reason = exc.message
            output: list[str] = old.output() if self.reexec and old is not None else []
        else:
            self.new = new
            self.report.spawned_now(new.pid, new.number)
            ready, why = await wait_ready(new, self._prober)
            output = new.output()
            if ready:
                self.ok = True
                self._phase(SwapPhase.READY)
                self.report.ready_now()
            else:
                self.reason = why
        if not self.ok:
            self._phase(SwapPhase.ROLLING_BACK)
            if new is not None:
                await self._stopper.discard(new, self.reexec)
            old_gone = old is not None and old.child.exited.done()
            message = swap_report.failure_message(
                self.spot.label, self.reason, old.pid if old is not None else None, old_gone
            )
            if old_gone:  # /status and the log say it too, not only supctl
                self.outcome = swap_report.COLD_RESTART
                self.reason = f"{self.reason}; {swap_report.COLD_NOTE}"
            raise OperationFailed(message, output=output)
        assert new is not None
        # g+1 is ready: make it current, then drain and retire g
        new.ready_at = time.monotonic()
        self._promote(new)
        self.promoted = True
        self._phase(SwapPhase.RETIRING)
        if old is not None:
            await self._stopper.retire(old, self.spot.cfg.stop, self.reexec)
        self.report.retired_now()
        self.outcome = swap_report.OK

    async def _run_restart(self) -> None:
        """Stop g, start g+1 gated on readiness; if it fails, start g's config again."""
        old = self.old
        assert old is not None
        undo_cfg, undo_release = self._undo
        self._phase(SwapPhase.RETIRING)
        self._unwatch()
        await self._stopper.retire(old, undo_cfg.stop, False)
        self.report.retired_now()
        self._phase(SwapPhase.BOOTING)
        output = await self._boot(self.spot, self._prober, self._numbers(), self._release)
        if self.ok:
            self.outcome = swap_report.OK
            return
        self._phase(SwapPhase.ROLLING_BACK)
        if self.new is not None:
            await self._stopper.discard(self.new, False)
            self.new = None
        reason = self.reason
        back_spot = dataclasses.replace(self.spot, cfg=undo_cfg)
        back_prober = Prober(back_spot, self._rt, lambda: True, self._loop)
        await self._boot(back_spot, back_prober, self._numbers(), undo_release)
        head = f"{self.spot.label}: new generation failed: {reason}"
        self.ok, self.reason = False, reason
        if self.promoted and self.new is not None:
            self.rolled_back = True
            raise OperationFailed(
                f"{head}; restarted on what it ran before (pid {self.new.pid})", output=output
            )
        self.outcome = swap_report.COLD_RESTART
        self.reason = f"{reason}; starting what it ran before failed too: {self.reason}"
        raise OperationFailed(
            f"{head}; starting what it ran before failed too; the instance is restarted cold",
            output=output,
        )

    async def _boot(
        self, spot: Spot, prober: Prober, number: int, release: str | None
    ) -> list[str]:
        """A restart's start: spawn, gate on readiness, promote if ready; its output."""
        try:
            new = await spawn(spot, self._rt, self._sink, number, release, self._loop)
        except SpawnError as exc:
            self.reason = exc.message
            return []
        self.new = new
        self.report.spawned_now(new.pid, new.number)
        ready, why = await wait_ready(new, prober)
        if not ready:
            self.reason = why
            return new.output()
        self.ok = True
        self._phase(SwapPhase.READY)
        self.report.ready_now()
        new.ready_at = time.monotonic()
        self._promote(new)
        self.promoted = True
        return new.output()

    async def _candidate(self) -> Generation:
        if self.reexec:
            assert self.old is not None
            return await follow_reexec(
                self.spot, self._rt, self.old, self._numbers(), self._release, self._loop
            )
        number = self._numbers()
        return await spawn(self.spot, self._rt, self._sink, number, self._release, self._loop)

    @property
    def cancelled(self) -> bool:
        return self.outcome == swap_report.CANCELLED

    def finish(self) -> float:
        """The swap's duration; its `swap_finished` line logged."""
        return self.report.finish(self.outcome, self.reason)


def _answer(reply: asyncio.Future[Any] | None, exc: Exception | None) -> None:
    if reply is None or reply.done():
        return
    if exc is None:
        reply.set_result(None)
    else:
        reply.set_exception(exc)
