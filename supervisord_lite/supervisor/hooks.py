"""Notify hooks: the events people want to hear about, sent to a command or a webhook.

``notify:`` (global under ``supervisor:``, and per app) names a command (``exec``:
the event as JSON on its standard input, run as ``user``) and/or a ``webhook``
(the same JSON POSTed, by :mod:`fetch`), and the events it wants: deploy started,
finished, failed, rolled back; crash, backoff, fatal, health failure, memory
replacement. The :class:`Notifier` listens to the history (every event the
recorder writes passes by it) and turns the matching ones into messages with the
app, instance, release, generation, reason, the caller's uid (for commands) and the
app's last lines of output when it failed.

It never blocks the daemon: each delivery is a task, time-limited (``timeout``:
the command's whole group is killed), tried once, never retried; at most
:data:`MAX_IN_FLIGHT` run at a time (more are dropped, and that is recorded).
Messages are rate-limited per hook, event kind and app: at most ``burst`` within
any ``window`` seconds; the others are folded into a count that the next message
carries (``folded``), or that a summary sent as soon as the window allows reports.
Each delivery, done or failed, is a ``hook`` event in the history.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config.settings import Config, NotifyConfig
from ..errors import SupervisorError
from ..host import fetch, spawning
from ..log import get_logger

log = get_logger("hooks")

MAX_IN_FLIGHT = 8
MAX_BODY = 60_000  # bytes of one message (fits a pipe's buffer: written without blocking)
OUTPUT_LINES = 20
GLOBAL = "global"

#: history kind (and result) -> the event a hook subscribes to
_EVENTS: dict[tuple[str, str | None], str] = {
    ("deploy_started", None): "deploy_started",
    ("deploy", "ok"): "deploy_finished",
    ("deploy", "failed"): "deploy_failed",
    ("rollback", "ok"): "rolled_back",
    ("crash", None): "crash",
    ("backoff", None): "backoff",
    ("fatal", None): "fatal",
    ("unhealthy", None): "health_failure",
    ("memory", None): "memory_replacement",
}
_FAILED = frozenset({"deploy_failed", "crash", "fatal", "health_failure", "backoff"})

#: (app, instance) -> {"release", "generation", "output"} as the app knows them now
Context = Callable[[str, str | None], dict[str, Any]]


def event_name(history_event: dict[str, Any]) -> str | None:
    kind = history_event.get("kind")
    if not isinstance(kind, str):
        return None
    return _EVENTS.get((kind, history_event.get("result")), _EVENTS.get((kind, None)))


@dataclass
class _Window:
    """The messages of one hook, event kind and app within the last ``window`` seconds."""

    sent: collections.deque[float] = field(default_factory=collections.deque)
    folded: int = 0
    last: dict[str, Any] | None = None  # the newest folded message (for the summary)
    flush: asyncio.TimerHandle | None = None


class Notifier:
    def __init__(
        self,
        config: Callable[[], Config],
        record: Callable[..., Any],
        context: Context,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._record = record  # history.record
        self._context = context
        self._loop = loop
        self._clock = clock
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _hooks(self, app: str | None) -> list[tuple[str, NotifyConfig]]:
        cfg = self._config()
        hooks = []
        if cfg.supervisor.notify is not None:
            hooks.append((GLOBAL, cfg.supervisor.notify))
        app_cfg = cfg.apps.get(app or "")
        if app_cfg is not None and app_cfg.notify is not None:
            hooks.append((app_cfg.name, app_cfg.notify))
        return hooks

    # --- what comes in --------------------------------------------------------------

    def on_history(self, event: dict[str, Any]) -> None:
        """The history's listener: a message for each event a hook wants."""
        name = event_name(event)
        if name is None:
            return
        app = event.get("app")
        hooks = [(s, h) for s, h in self._hooks(app) if name in h.events]
        if not hooks:
            return
        message = self._message(name, event)
        for scope, hook in hooks:
            self._offer(scope, hook, name, message)

    def _message(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        app, instance = event.get("app"), event.get("instance")
        now = self._context(app, instance) if isinstance(app, str) else {}
        output = event.get("output") or (now.get("output") if name in _FAILED else None)
        return {
            "event": name,
            "app": app,
            "instance": instance,
            "release": event.get("release") or now.get("release"),
            "generation": event.get("generation") or now.get("generation"),
            "reason": event.get("reason") or event.get("message"),
            "uid": event.get("uid"),
            "output": list(output or [])[-OUTPUT_LINES:],
            "time": event.get("time"),
            "history_id": event.get("id"),
            "folded": 0,
        }

    # --- rate limit -----------------------------------------------------------------

    def _offer(self, scope: str, hook: NotifyConfig, name: str, message: dict[str, Any]) -> None:
        key = (scope, name, str(message.get("app")))
        window = self._windows.setdefault(key, _Window())
        now = self._clock()
        while window.sent and window.sent[0] <= now - hook.window:
            window.sent.popleft()
        if len(window.sent) < hook.burst:
            window.sent.append(now)
            if window.flush is not None:
                window.flush.cancel()
                window.flush = None
            self._send(scope, hook, {**message, "folded": window.folded})
            window.folded, window.last = 0, None
            return
        window.folded += 1
        window.last = message
        if window.flush is None:
            delay = max(0.0, window.sent[0] + hook.window - now)
            window.flush = self._loop.call_later(delay, self._flush, scope, hook, key)

    def _flush(self, scope: str, hook: NotifyConfig, key: tuple[str, str, str]) -> None:
        """The window has room again: say how many were folded (one message)."""
        window = self._windows.get(key)
        if window is None or window.last is None or not window.folded:
            return
        window.flush = None
        window.sent.append(self._clock())
        count = window.folded
        summary = {
            **window.last,
            "folded": count,
            "reason": f"{count} {key[1]} event(s) folded; the last: {window.last.get('reason')}",
        }
        window.folded, window.last = 0, None
        self._send(scope, hook, summary)

    # --- delivery ---------------------------------------------------------------------

    def _send(self, scope: str, hook: NotifyConfig, message: dict[str, Any]) -> None:
        body = json.dumps(message, default=str).encode()
        if len(body) > MAX_BODY:
            message = {**message, "output": message["output"][-3:]}
            body = json.dumps(message, default=str).encode()[:MAX_BODY]
        targets = ([("exec", hook.exec)] if hook.exec else []) + (
            [("webhook", hook.webhook)] if hook.webhook else []
        )
        for how, target in targets:
            if len(self._tasks) >= MAX_IN_FLIGHT:
                self._recorded(scope, how, message, False, 0.0, "too many deliveries at once")
                continue
            task = self._loop.create_task(self._deliver(scope, hook, how, target, message, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self,
        scope: str,
        hook: NotifyConfig,
        how: str,
        target: Any,
        message: dict[str, Any],
        body: bytes,
    ) -> None:
        started = self._clock()
        try:
            if how == "webhook":
                await fetch.post_json(target, body, hook.timeout)
                problem = None
            else:
                problem = await self._exec(hook, target, body)
        except SupervisorError as exc:
            problem = exc.message
        except Exception as exc:  # a hook must never take the daemon down
            log.exception("hook_failed", scope=scope)
            problem = repr(exc)
        self._recorded(scope, how, message, problem is None, self._clock() - started, problem)

    async def _exec(self, hook: NotifyConfig, argv: tuple[str, ...], body: bytes) -> str | None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            os.write(write_fd, body)  # at most MAX_BODY: fits the pipe, never blocks
        finally:
            os.close(write_fd)
        env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
        spec = spawning.SpawnSpec(argv=argv, env=env, cwd="/", user=hook.user, stdin_fd=read_fd)
        try:
            code, output = await spawning.run_command(spec, hook.timeout, self._loop)
        finally:
            os.close(read_fd)
        if code == 0:
            return None
        tail = output.strip().splitlines()[-1:] or [""]
        if code is None:
            return f"killed after {hook.timeout:g}s"
        return f"exit status {code}" + (f": {tail[0][:200]}" if tail[0] else "")

    def _recorded(
        self,
        scope: str,
        how: str,
        message: dict[str, Any],
        ok: bool,
        seconds: float,
        problem: str | None,
    ) -> None:
        name = message.get("event")
        text = f"{how} hook ({scope}) for {name}: " + ("delivered" if ok else f"failed: {problem}")
        if message.get("folded"):
            text += f" ({message['folded']} folded)"
        self._record(
            "hook",
            text,
            app=message.get("app"),
            instance=message.get("instance"),
            level="info" if ok else "warning",
            result="ok" if ok else "failed",
            hook=how,
            scope=scope,
            event=name,
            folded=message.get("folded", 0),
            seconds=round(seconds, 3),
            reason=problem,
        )

    async def close(self) -> None:
        """Let deliveries in flight end (each is bounded by its timeout)."""
        for window in self._windows.values():
            if window.flush is not None:
                window.flush.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
