"""What goes into the history: the supervisor's hooks turned into events.

The :class:`Recorder` is told about control commands (with the peer's credentials),
instance events (crashes, failed starts, health failures, backoff, FATAL, memory
replacements), swaps from start to finish, and deploys; it composes one history
event for each, with its timings. A swap is watched while it runs: the candidate
generation's spawn and readiness, and the accept queue of the supervisor-held
listening socket (:mod:`backlog`), so its record shows whether anything was dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from ..control.commands import COMMANDS
from ..control.commands.spec import ArgKind
from ..errors import SupervisorError
from ..host.backlog import BacklogFigures, BacklogWatch
from ..instance.generation import Generation
from ..instance.instance import Instance
from ..instance.state import State
from ..log import get_logger
from ..snapshots import SwapRecord
from .history import History

log = get_logger("recorder")

Result = dict[str, Any]


@dataclass
class _SwapWatch:
    inst: Instance
    started: float  # time.monotonic()
    trigger: str
    old_pid: int | None
    old_generation: int
    candidate: Generation | None = None
    backlog: BacklogWatch | None = None


def _ms(seconds: float | None) -> float | None:
    return round(seconds, 4) if seconds is not None else None


def command_line(command: str, args: dict[str, Any]) -> str:
    """``supctl deploy web v2 --pause`` from a request's raw arguments."""
    parts = ["supctl", command]
    spec = COMMANDS.get(command)
    for arg in spec.args if spec is not None else ():
        value = args.get(arg.name)
        if value is None or value is False or value == []:
            continue
        if arg.kind is ArgKind.FLAG:
            parts.append(arg.flags[-1])
        elif arg.flags:
            parts += [arg.flags[0], str(value)]
        elif isinstance(value, list):
            parts += [str(item) for item in value]
        else:
            parts.append(str(value))
    return " ".join(parts)


def _subject(args: dict[str, Any]) -> tuple[str | None, str | None, list[str] | None]:
    """The app and instance a command's arguments name (and a list of several apps)."""
    target = args.get("target")
    if isinstance(target, str):
        app, _, instance = target.partition(":")
        return app, instance or None, None
    if isinstance(args.get("app"), str):
        return args["app"], None, None
    apps = args.get("apps")
    if isinstance(apps, list) and all(isinstance(a, str) for a in apps):
        return (apps[0] if len(apps) == 1 else None), None, apps
    return None, None, None


class Recorder:
    """Composes history events from the supervisor's hooks."""

    def __init__(
        self,
        history: History,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.history = history
        self.loop = loop
        self._clock = clock
        self._swaps: dict[tuple[str, str], _SwapWatch] = {}

    # --- the daemon ------------------------------------------------------------------

    def daemon_started(self, pid: int, version: str, how: str, adopted: int) -> None:
        """``how``: "started", "upgraded" (re-executed) or "recovered" (after a crash)."""
        what = {"upgraded": " after an upgrade", "recovered": " after a crash"}.get(how, "")
        self.history.record(
            "daemon",
            f"daemon pid {pid} (version {version}) started{what}; adopted {adopted} instances",
            pid=pid,
            version=version,
            how=how,
            adopted=adopted,
        )

    def daemon_stopping(self, pid: int) -> None:
        self.history.record("daemon", f"daemon pid {pid} stopping every app", pid=pid)

    # --- control commands ------------------------------------------------------------

    def command(
        self,
        command: str,
        args: dict[str, Any],
        *,
        uid: int | None,
        pid: int | None,
        gid: int | None,
        error: dict[str, Any] | None,
        duration_s: float,
    ) -> None:
        app, instance, apps = _subject(args)
        line = command_line(command, args)
        message = line if error is None else f"{line}: {error.get('message')}"
        self.history.record(
            "command",
            message,
            app=app,
            instance=instance,
            level="info" if error is None else "warning",
            command=command,
            args=args,
            apps=apps,
            uid=uid,
            pid=pid,
            gid=gid,
            result="ok" if error is None else str(error.get("code", "failed")),
            error=error.get("message") if error is not None else None,
            duration_s=_ms(duration_s),
        )

    async def operation(
        self, kind: str, app: str, work: Awaitable[Result], **fields: Any
    ) -> Result:
        """Run a deploy, promote or rollback and record how it ended, with its duration."""
        started = self._clock()
        try:
            result = await work
        except SupervisorError as exc:
            self.history.record(
                kind,
                f"{kind} failed: {exc.message}",
                app=app,
                level="warning",
                result="failed",
                reason=exc.message,
                output=exc.details.get("output"),
                duration_s=_ms(self._clock() - started),
                **fields,
            )
            raise
        release = result.get("release")
        paused = bool(result.get("paused"))
        message = f"{kind}: {app} runs {release}" + (" on its canary, paused" if paused else "")
        after_failed = result.get("after_failed")  # the release stands; the task failed
        if isinstance(after_failed, dict):
            message += f", but an after task failed ({after_failed.get('outcome')})"
        self.history.record(
            kind,
            message,
            app=app,
            level="warning" if after_failed else "info",
            result="ok",
            duration_s=_ms(self._clock() - started),
            after_failed=after_failed,
            **{"release": release, "paused": paused, **fields},
        )
        return result

    # --- instances -------------------------------------------------------------------

    def instance_event(self, inst: Instance, kind: str, **fields: Any) -> None:
        """A hook of ``generation.Runtime.on_event``: ``kind`` with its fields."""
        handler = getattr(self, f"_on_{kind}", None)
        try:
            if handler is not None:
                handler(inst, **fields)
        except Exception:  # a bug here must not break the instance that reported it
            log.exception("history_event_failed", kind=kind, instance=inst.label)

    def _on_failure(
        self, inst: Instance, trigger: str, reason: str | None, state: str, **fields: Any
    ) -> None:
        if state not in (State.STARTING, State.RUNNING):
            return  # the late echo of a failure already recorded (exit, then not-ready)
        kind = {"exit": "crash", "unhealthy": "unhealthy"}.get(trigger, "start_failed")
        self.history.record(
            kind,
            reason or trigger,
            app=inst.app,
            instance=inst.name,
            level="warning",
            trigger=trigger,
            reason=reason,
            state=state,
            **fields,
        )

    def _on_state(self, inst: Instance, state: str, previous: str) -> None:
        if state not in (State.FATAL, State.EXITED):
            return
        message = (
            f"gave up (FATAL) after {inst.failures} consecutive failures: {inst.last_error}"
            if state == State.FATAL
            else f"not restarted (EXITED): {inst.last_error}"
        )
        self.history.record(
            state.lower(),
            message,
            app=inst.app,
            instance=inst.name,
            level="warning" if state == State.FATAL else "info",
            state=state,
            previous=previous,
            failures=inst.failures,
            reason=inst.last_error,
        )

    def _on_backoff(self, inst: Instance, delay_s: float) -> None:
        self.history.record(
            "backoff",
            f"retrying in {delay_s:.2f}s after {inst.failures} consecutive failures",
            app=inst.app,
            instance=inst.name,
            delay_s=_ms(delay_s),
            failures=inst.failures,
            reason=inst.last_error,
        )

    def _on_memory(self, inst: Instance, rss: int, limit: int) -> None:
        self.history.record(
            "memory",
            f"RSS {rss} bytes stayed above max_memory {limit}: replacing it (hot swap)",
            app=inst.app,
            instance=inst.name,
            level="warning",
            rss=rss,
            limit=limit,
            pid=inst.pid,
        )

    # --- swaps -----------------------------------------------------------------------

    def _on_swap_started(self, inst: Instance, trigger: str) -> None:
        old = inst.current_generation()
        watch = _SwapWatch(
            inst,
            self._clock(),
            trigger,
            old.pid if old is not None else None,
            old.number if old is not None else inst.generation,
        )
        for sock in inst.sockets[:1]:
            backlog = BacklogWatch(sock)
            if backlog.start(self.loop):
                watch.backlog = backlog
        previous = self._swaps.pop((inst.app, inst.name), None)
        if previous is not None and previous.backlog is not None:
            previous.backlog.cancel()
        self._swaps[(inst.app, inst.name)] = watch

    def generation(self, inst: Instance, gen: Generation, alive: bool) -> None:
        """The supervisor's pid-registry hook: notes a swap's candidate when it spawns."""
        watch = self._swaps.get((inst.app, inst.name))
        if (
            watch is not None
            and alive
            and watch.candidate is None
            and gen.number != watch.old_generation
        ):
            watch.candidate = gen

    def swap_finished(self, record: SwapRecord) -> SwapRecord:
        """The swap's record with its timings and accept-queue figures; recorded."""
        try:
            return self._swap_finished(record)
        except Exception:  # the swap itself is over and counted either way
            log.exception("history_swap_failed", app=record.app, instance=record.instance)
            return record

    def _swap_finished(self, record: SwapRecord) -> SwapRecord:
        watch = self._swaps.pop((record.app, record.instance), None)
        figures: BacklogFigures | None = None
        spawned = ready = retired = None
        new: Generation | None = None
        if watch is not None:
            if watch.backlog is not None:
                figures = watch.backlog.stop()
            new = watch.inst.current_generation() if record.ok else watch.candidate
            if new is not None and new.number == watch.old_generation:
                new = watch.candidate
            if new is not None:
                spawned = max(0.0, new.child.started_at - watch.started)
                if record.ok and new.ready_at is not None:
                    ready = max(0.0, new.ready_at - watch.started)
            if record.ok:
                retired = self._clock() - watch.started
        full = replace(
            record,
            spawned_s=_ms(spawned),
            ready_s=_ms(ready),
            retired_s=_ms(retired),
            accept_queue_peak=figures.accept_queue_peak if figures else None,
            accept_queue_limit=figures.accept_queue_limit if figures else None,
            listen_drops=figures.listen_drops if figures else None,
        )
        self._record_swap(full, watch, new, figures)
        return full

    def _record_swap(
        self,
        rec: SwapRecord,
        watch: _SwapWatch | None,
        new: Generation | None,
        figures: BacklogFigures | None,
    ) -> None:
        old_gen = watch.old_generation if watch else None
        old_pid = watch.old_pid if watch else None
        if rec.ok:
            message = (
                f"generation {old_gen} -> {new.number if new else '?'} "
                f"(pid {old_pid} -> {new.pid if new else '?'})"
            )
        else:
            message = f"swap failed after {rec.duration_s:.2f}s: {rec.reason}; old one kept"
        if figures is not None:
            dropped = "?" if figures.listen_drops is None else str(figures.listen_drops)
            message += (
                f"; accept queue peak {figures.accept_queue_peak}/"
                f"{figures.accept_queue_limit}, {dropped} dropped"
            )
        self.history.record(
            "swap",
            message,
            app=rec.app,
            instance=rec.instance,
            level="info" if rec.ok and not (figures and figures.listen_drops) else "warning",
            result="ok" if rec.ok else "failed",
            reason=rec.reason,
            trigger=watch.trigger if watch else None,
            duration_s=_ms(rec.duration_s),
            spawned_s=rec.spawned_s,
            ready_s=rec.ready_s,
            retired_s=rec.retired_s,
            old_generation=old_gen,
            new_generation=new.number if new else None,
            old_pid=old_pid,
            new_pid=new.pid if new else None,
            accept_queue_peak=rec.accept_queue_peak,
            accept_queue_limit=rec.accept_queue_limit,
            listen_drops=rec.listen_drops,
            drops_scope=figures.drops_scope if figures else None,
            samples=figures.samples if figures else 0,
        )
