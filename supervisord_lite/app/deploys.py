"""Releases of one app: canary deploy, promote, rollback; and the app's one-operation guard.

A deploy swaps the backup(s) onto the new release first, lets them settle (same
process, healthy), then the primary, and only then switches ``current`` and the
history; any failure puts every instance back on the release it ran before. A
deploy may pause at its canary until ``promote`` or ``rollback``. The
:class:`Deployer` gets the app's instances, its release store and hooks for the
app's current release; it never sees the app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..errors import Busy, OperationFailed, SupervisorError, UsageError
from ..instance.instance import Instance
from ..instance.state import State
from ..log import get_logger
from ..snapshots import DeployStats
from .releases import ReleaseStore

log = get_logger("app")

Progress = Callable[[str, dict[str, Any]], None]


class Guard:
    """One operation at a time on an app's processes (restart, reload, update, deploy);
    while a deploy is paused at its canary, only promote or rollback."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.busy: str | None = None
        self.paused: dict[str, Any] | None = None  # a deploy paused at its canary

    def take(self, operation: str) -> None:
        if self.busy is not None:
            raise Busy(f"{self._name}: {self.busy} already in progress")
        if self.paused is not None and operation not in ("promote", "rollback"):
            raise Busy(
                f"{self._name}: a deploy of {self.paused['release']} is paused at the canary; "
                f"`supctl promote {self._name}` or `supctl rollback {self._name}` first"
            )
        self.busy = operation

    def done(self) -> None:
        self.busy = None


class Deployer:
    def __init__(
        self,
        name: str,
        guard: Guard,
        store: ReleaseStore | None,
        instances: dict[str, Instance],
        order: Callable[[], list[Instance]],
        settle_s: Callable[[], float],
        current: Callable[[], str | None],
        switched: Callable[[str], None],
    ) -> None:
        self._name = name
        self.guard = guard
        self._store_ = store
        self._instances = instances  # the app's own dict, in configuration order
        self._order = order  # backup(s) first, the primary last
        self._settle_s = settle_s
        self._current = current  # the app's current release
        self._switched = switched  # a release became current: record it
        self.stats = DeployStats()  # finished deploys, for /metrics

    async def deploy(self, release: str, pause: bool, progress: Progress) -> dict[str, Any]:
        """Canary deploy: backup(s) first, settle, then the primary, then ``current``.

        Any failure puts every instance back on the release it ran before; ``current``
        and the history change only once every instance runs the new release.
        """
        store = self._store()
        self.guard.take("deploy")
        started, ok = time.monotonic(), False
        try:
            if not store.exists(release):
                raise OperationFailed(
                    f"{self._name}: release {release!r} not found "
                    f"({store.release_dir(release)} is not a directory)"
                )
            before = {i.name: i.release for i in self._instances.values()}
            canaries = self._order()[:-1]
            progress(f"{self._name}: deploying {release} (was {self._current() or 'none'})", {})
            try:
                for inst in canaries:
                    await self._swap_to(inst, release, progress)
                for inst in canaries:
                    await self._settle(inst, progress)
            except SupervisorError as exc:
                raise await self._failed(release, before, exc, progress) from None
            if pause and canaries:
                self.guard.paused = {
                    "release": release,
                    "phase": "paused",
                    "before": before,
                    "canaries": [i.name for i in canaries],
                }
                names = ", ".join(i.label for i in canaries)
                return {
                    "message": f"{names} runs {release}; `supctl promote {self._name}` to "
                    f"continue, `supctl rollback {self._name}` to undo",
                    "paused": True,
                    "release": release,
                }
            result = await self._finish(release, before, progress)
            ok = True
            return result
        finally:
            self.guard.done()
            if self.guard.paused is None:  # finished (a paused one is counted by promote)
                self.stats = self.stats.observe(ok, time.monotonic() - started)

    async def promote(self, progress: Progress) -> dict[str, Any]:
        self._store()
        if self.guard.paused is None:
            raise UsageError(f"{self._name}: no paused deploy to promote")
        self.guard.take("promote")
        started, ok = time.monotonic(), False
        try:
            deploy = self.guard.paused
            result = await self._finish(deploy["release"], deploy["before"], progress)
            ok = True
            return result
        finally:
            self.guard.done()
            self.stats = self.stats.observe(ok, time.monotonic() - started)

    async def rollback(self, progress: Progress) -> dict[str, Any]:
        store = self._store()
        if self.guard.paused is not None:
            self.guard.take("rollback")
            try:
                deploy, self.guard.paused = self.guard.paused, None
                progress(f"{self._name}: undoing the paused deploy of {deploy['release']}", {})
                await self._revert(deploy["before"], progress)
                return {
                    "release": self._current(),
                    "message": f"{self._name}: back on {self._current()}",
                }
            finally:
                self.guard.done()
        previous = store.load().previous()
        if previous is None:
            raise OperationFailed(f"{self._name}: no previous release to roll back to")
        progress(f"{self._name}: rolling back to {previous}", {})
        return await self.deploy(previous, False, progress)

    def _store(self) -> ReleaseStore:
        if self._store_ is None:
            raise UsageError(f"{self._name}: has no `release:` config; it cannot be deployed")
        return self._store_

    async def _swap_to(self, inst: Instance, release: str, progress: Progress) -> None:
        if inst.state is State.STOPPED:
            await inst.swap(release=release)
            return
        progress(
            f"{inst.label}: {inst.cfg.reload.doing} to {release}",
            {"app": self._name, "instance": inst.name, "release": release},
        )
        await inst.swap(release=release)
        progress(
            f"{inst.label}: ready on {release}, pid {inst.pid or '?'}",
            {"app": self._name, "instance": inst.name, "state": inst.state.value},
        )

    async def _settle(self, inst: Instance, progress: Progress) -> None:
        """The canary must stay up (same process) and healthy for ``release.settle``."""
        settle = self._settle_s()
        if inst.state is State.STOPPED or settle <= 0:
            return
        progress(f"{inst.label}: settling for {settle:g}s", {"app": self._name})
        pid = inst.pid
        deadline = time.monotonic() + settle
        while True:
            if inst.state is not State.RUNNING or inst.pid is None or inst.pid != pid:
                raise OperationFailed(
                    f"{inst.label} did not stay up while settling: {inst.last_error}",
                    output=inst.last_output(),
                )
            result = await inst.probe_health()
            if result is not None and not result.ok and not result.foreign:
                raise OperationFailed(
                    f"{inst.label} failed its health check while settling: {result.detail}",
                    output=inst.last_output(),
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(0.25, remaining))

    async def _finish(
        self, release: str, before: dict[str, str | None], progress: Progress
    ) -> dict[str, Any]:
        store = self._store()
        try:
            for inst in self._order():
                if inst.release != release:
                    await self._swap_to(inst, release, progress)
        except SupervisorError as exc:
            self.guard.paused = None
            raise await self._failed(release, before, exc, progress) from None
        self.guard.paused = None
        history = store.record(release)  # before the switch: load() may read the link
        store.switch_current(release)
        self._switched(release)
        pruned, refused = store.prune(history, {i.release or "" for i in self._instances.values()})
        progress(f"{self._name}: {release} is current", {"app": self._name, "release": release})
        result: dict[str, Any] = {
            "release": release,
            "instances": {i.name: i.release for i in self._instances.values()},
            "pruned": pruned,
        }
        if refused is not None:  # the deploy stands; old releases stay until fixed
            log.warning("prune_refused", app=self._name, reason=refused)
            progress(f"{self._name}: old releases not pruned: {refused}", {"app": self._name})
            result["prune_refused"] = refused
        return result

    async def _failed(
        self,
        release: str,
        before: dict[str, str | None],
        exc: SupervisorError,
        progress: Progress,
    ) -> OperationFailed:
        progress(f"{self._name}: deploy of {release} failed; rolling back", {})
        await self._revert(before, progress)
        back = ", ".join(f"{n}={r}" for n, r in before.items())
        return OperationFailed(
            f"{self._name}: deploy of {release} failed: {exc.message}; every instance is back "
            f"on its previous release ({back}), current unchanged",
            output=exc.details.get("output", []),
        )

    async def _revert(self, before: dict[str, str | None], progress: Progress) -> None:
        for inst in self._order():
            old = before.get(inst.name)
            if inst.release != old and old is not None:
                try:
                    await self._swap_to(inst, old, progress)
                except SupervisorError as exc:
                    log.error("rollback_failed", instance=inst.label, reason=exc.message)
                    progress(f"{inst.label}: could not return to {old}: {exc.message}", {})
