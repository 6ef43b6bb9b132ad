"""Releases of one app: canary deploy, promote, rollback; and the app's one-operation guard.

A deploy swaps the backup(s) onto the new release first, lets them settle (same
process, healthy), then the primary, and only then switches ``current`` and the
history; any failure puts every instance back on the release it ran before. A
deploy may pause at its canary until ``promote`` or ``rollback``. The
:class:`Deployer` gets the app's instances, its release store and hooks for the
app's current release; it never sees the app.

Around that, the release pipeline (docs/pipeline.md) through :class:`Pipeline`'s
hooks: the artifact is installed first (:mod:`artifacts`), then the ``before``
tasks run (a failure refuses the deploy before any instance changes), and the
``after`` tasks once it is promoted (:mod:`app_tasks`). Each step goes into the
history; a failed deploy's release is marked so (retention and rollback skip it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Busy, OperationFailed, SupervisorError, UsageError
from ..instance.instance import Instance
from ..instance.state import State
from ..log import get_logger
from ..snapshots import DeployStats
from .artifacts import Fetched
from .releases import ReleaseStore
from .tasks import TaskResult

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


@dataclass(frozen=True)
class Pipeline:
    """What a deploy does around its swaps, given by the app."""

    #: (release, url, sha256 or None, progress) -> what was installed; None: no artifact
    install: Callable[[str, str | None, str | None, Progress], Awaitable[Fetched | None]]
    #: (release, phase, argv) -> how the task ended
    run_task: Callable[[str, str, tuple[str, ...]], Awaitable[TaskResult]]
    before: Callable[[], tuple[tuple[str, ...], ...]]
    after: Callable[[], tuple[tuple[str, ...], ...]]
    undo_failed_after: Callable[[], bool]
    #: (kind, message, **fields): one history event
    record: Callable[..., Any]


def _quiet_record(kind: str, message: str, **fields: Any) -> None:
    log.info("pipeline", kind=kind, message=message, **fields)


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
        pipeline: Pipeline | None = None,
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
        self._pipeline = pipeline

    async def deploy(
        self,
        release: str,
        pause: bool,
        progress: Progress,
        artifact: str | None = None,
        sha256: str | None = None,
        uid: int | None = None,
        *,
        undoable: bool = True,
    ) -> dict[str, Any]:
        """Canary deploy: backup(s) first, settle, then the primary, then ``current``.

        Any failure puts every instance back on the release it ran before; ``current``
        and the history change only once every instance runs the new release. ``uid``
        (the caller's) goes into the history events of the steps. ``undoable``: a
        failed ``after`` task may roll it back (not when this deploy is itself a
        rollback: that would undo the undo, back and forth).
        """
        store = self._store()
        self.guard.take("deploy")
        started, ok = time.monotonic(), False
        after_failed: TaskResult | None = None
        try:
            fetched = await self._install(release, artifact, sha256, progress, uid)
            if not store.exists(release):
                raise OperationFailed(
                    f"{self._name}: release {release!r} not found "
                    f"({store.release_dir(release)} is not a directory)"
                )
            before = {i.name: i.release for i in self._instances.values()}
            canaries = self._order()[:-1]
            progress(f"{self._name}: deploying {release} (was {self._current() or 'none'})", {})
            await self._tasks(release, "before", progress, uid)
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
            after_failed = await self._after(release, result, progress, uid)
            if fetched is not None:
                result["artifact"] = _fetched_fields(fetched)
            ok = after_failed is None or not (undoable and self._undo_after())
            if ok:
                return result
        except SupervisorError:
            if store.exists(release) and store.load().current != release:
                store.mark_failed(release)
            raise
        finally:
            self.guard.done()
            if self.guard.paused is None:  # finished (a paused one is counted by promote)
                self.stats = self.stats.observe(ok, time.monotonic() - started)
        return await self._undo(release, after_failed, progress, uid)

    # --- the pipeline around the swaps --------------------------------------------------

    def _record(self, kind: str, message: str, **fields: Any) -> None:
        record = self._pipeline.record if self._pipeline is not None else _quiet_record
        record(kind, message, **fields)

    async def _install(
        self,
        release: str,
        url: str | None,
        sha256: str | None,
        progress: Progress,
        uid: int | None,
    ) -> Fetched | None:
        if self._pipeline is None:
            if url is not None:
                raise UsageError(f"{self._name}: cannot install artifacts here")
            return None
        try:
            fetched = await self._pipeline.install(release, url, sha256, progress)
        except SupervisorError as exc:
            self._record(
                "artifact",
                f"artifact for {release} refused: {exc.message}",
                app=self._name,
                level="warning",
                result="failed",
                release=release,
                url=url,
                sha256=sha256,
                reason=exc.message,
                uid=uid,
            )
            raise
        if fetched is not None:
            what = "installed" if fetched.installed else "already installed"
            self._record(
                "artifact",
                f"{release} {what} from {fetched.url} ({fetched.size} bytes, "
                f"sha256 {fetched.sha256[:12]}..., {fetched.seconds:.2f}s)",
                app=self._name,
                result="ok",
                release=release,
                uid=uid,
                **_fetched_fields(fetched),
            )
            progress(f"{self._name}: {release} {what} from {fetched.url}", {"release": release})
        return fetched

    async def _run_tasks(
        self, release: str, phase: str, progress: Progress, uid: int | None
    ) -> TaskResult | None:
        """Run ``phase``'s tasks in order; the first that failed (the rest do not run)."""
        if self._pipeline is None:
            return None
        commands = self._pipeline.before() if phase == "before" else self._pipeline.after()
        for argv in commands:
            progress(f"{self._name}: {phase} task: {' '.join(argv)}", {"release": release})
            result = await self._pipeline.run_task(release, phase, argv)
            self._record(
                "task",
                f"{phase} task {' '.join(result.argv)} for {release}: {result.outcome} "
                f"after {result.seconds:.2f}s",
                app=self._name,
                level="info" if result.ok else "warning",
                result="ok" if result.ok else "failed",
                release=release,
                phase=phase,
                argv=list(result.argv),
                exit_status=result.code,
                seconds=round(result.seconds, 3),
                output=result.output,
                uid=uid,
            )
            if not result.ok:
                return result
        return None

    async def _tasks(self, release: str, phase: str, progress: Progress, uid: int | None) -> None:
        failed = await self._run_tasks(release, phase, progress, uid)
        if failed is not None:
            raise OperationFailed(
                f"{self._name}: {phase} task {' '.join(failed.argv)} failed ({failed.outcome}); "
                f"deploy of {release} refused, no instance changed",
                output=failed.output,
            )

    async def _after(
        self, release: str, result: dict[str, Any], progress: Progress, uid: int | None
    ) -> TaskResult | None:
        failed = await self._run_tasks(release, "after", progress, uid)
        if failed is not None:
            result["after_failed"] = {
                "argv": list(failed.argv),
                "exit_status": failed.code,
                "outcome": failed.outcome,
                "output": failed.output,
            }
            result["message"] = (
                f"{self._name}: deployed {release}, but the after task "
                f"{' '.join(failed.argv)} failed ({failed.outcome})"
            )
        return failed

    def _undo_after(self) -> bool:
        return self._pipeline is not None and self._pipeline.undo_failed_after()

    async def _undo(
        self, release: str, failed: TaskResult | None, progress: Progress, uid: int | None
    ) -> dict[str, Any]:
        """An ``after`` task of ``release`` failed and the operator asked for that to undo
        the deploy: the release before it is deployed again, and ``release`` marked failed.
        Always raises: the deploy failed, whatever the rollback did."""
        assert failed is not None
        what = f"{self._name}: after task {' '.join(failed.argv)} failed ({failed.outcome})"
        previous = self._store().load().previous()
        if previous is None:
            raise OperationFailed(
                f"{what}; no previous release to roll back to, {release} stays",
                output=failed.output,
            )
        progress(
            f"{self._name}: an after task failed; rolling back to {previous} "
            "(deploy.undo_failed_after)",
            {},
        )
        started = time.monotonic()
        try:
            back = await self.deploy(previous, False, progress, uid=uid, undoable=False)
        except SupervisorError as exc:
            raise OperationFailed(
                f"{what}; rolling back to {previous} failed too: {exc.message}",
                output=failed.output,
            ) from None
        self._store().mark_failed(release)
        again = back.get("after_failed")
        also = f", whose after task failed too ({again['outcome']})" if again else ""
        self._record(
            "rollback",
            f"rollback: {self._name} runs {previous} (the after task "
            f"{' '.join(failed.argv)} of {release} failed; deploy.undo_failed_after){also}",
            app=self._name,
            level="warning",
            result="ok",
            release=previous,
            previous=release,
            trigger="deploy.undo_failed_after",
            after_failed=again,
            duration_s=round(time.monotonic() - started, 4),
            uid=uid,
        )
        raise OperationFailed(f"{what}; rolled back to {previous}{also}", output=failed.output)

    async def promote(self, progress: Progress, uid: int | None = None) -> dict[str, Any]:
        self._store()
        if self.guard.paused is None:
            raise UsageError(f"{self._name}: no paused deploy to promote")
        self.guard.take("promote")
        started, ok = time.monotonic(), False
        try:
            deploy = self.guard.paused
            result = await self._finish(deploy["release"], deploy["before"], progress)
            after_failed = await self._after(deploy["release"], result, progress, uid)
            ok = after_failed is None or not self._undo_after()
            if ok:
                return result
        finally:
            self.guard.done()
            self.stats = self.stats.observe(ok, time.monotonic() - started)
        return await self._undo(deploy["release"], after_failed, progress, uid)

    async def rollback(self, progress: Progress, uid: int | None = None) -> dict[str, Any]:
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
        return await self.deploy(previous, False, progress, uid=uid, undoable=False)

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
        in_use = {i.release or "" for i in self._instances.values()}
        pruned, refused = store.prune(history, in_use)
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


def _fetched_fields(fetched: Fetched) -> dict[str, Any]:
    return {
        "url": fetched.url,
        "sha256": fetched.sha256,
        "size": fetched.size,
        "seconds": round(fetched.seconds, 3),
        "installed": fetched.installed,
    }
