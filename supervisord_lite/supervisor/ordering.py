"""Dependency order across apps: an app starts once the apps it depends on are ready,
and stops only after the apps that depend on it.

An app held back by a dependency that failed starts by itself once that dependency
becomes ready (its instances keep retrying with backoff).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..app.app import App, Progress, quiet
from ..config.settings import Config
from ..errors import SupervisorError
from ..instance.state import State
from ..log import get_logger

log = get_logger("supervisor")


class DependencyOrder:
    def __init__(
        self,
        config: Callable[[], Config],
        apps: Callable[[], dict[str, App]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._config = config  # the running config (update replaces it)
        self._apps = apps  # the running apps (update replaces the dict)
        self._loop = loop
        self._waiting: dict[str, asyncio.Task[None]] = {}  # held back by a dependency

    async def start(self, names: list[str], progress: Progress) -> list[str]:
        tasks: dict[str, asyncio.Task[bool]] = {}

        async def start_one(name: str) -> bool:
            app = self._apps()[name]
            deps_ok = True
            for dep in app.cfg.depends_on:
                if dep in tasks:
                    deps_ok = await tasks[dep] and deps_ok
                elif not self._apps()[dep].is_running():
                    deps_ok = False
            if not deps_ok:
                progress(
                    f"{name}: waiting for its dependencies "
                    f"({', '.join(app.cfg.depends_on)}) to become ready",
                    {"app": name},
                )
                app.should_run = True
                self._start_when_ready(app)
                return False
            try:
                await app.start(None, progress, boot=True)
            except SupervisorError as exc:
                progress(f"{name}: {exc.message}", {"app": name, "error": exc.to_wire()})
                return False
            return True

        for name in names:
            tasks[name] = self._loop.create_task(start_one(name))
        results = await asyncio.gather(*tasks.values())
        return [n for n, ok in zip(tasks, results, strict=True) if not ok]

    def _start_when_ready(self, app: App) -> None:
        async def wait_then_start() -> None:
            for dep in app.cfg.depends_on:
                for inst in self._apps()[dep].instances.values():
                    await inst.wait_for(lambda s: s is State.RUNNING)
            if app.should_run:
                try:
                    await app.start(None, quiet)
                except SupervisorError as exc:
                    log.warning("deferred_start_failed", app=app.name, reason=exc.message)
            self._waiting.pop(app.name, None)

        old = self._waiting.pop(app.name, None)
        if old is not None:
            old.cancel()
        self._waiting[app.name] = self._loop.create_task(wait_then_start())

    def dependents(self, name: str) -> list[str]:
        return [n for n, a in self._apps().items() if name in a.cfg.depends_on]

    async def stop(self, names: list[str], progress: Progress, close: bool) -> None:
        """Stop apps so that each stops only after every app that depends on it."""
        tasks: dict[str, asyncio.Task[None]] = {}
        chosen = set(names)

        async def stop_one(name: str) -> None:
            for dependent in self.dependents(name):
                if dependent in tasks:
                    await asyncio.gather(tasks[dependent], return_exceptions=True)
            waiting = self._waiting.pop(name, None)
            if waiting is not None:
                waiting.cancel()
            app = self._apps()[name]
            if close:
                await app.close()
            else:
                await app.stop(None, progress)

        order = [n for n in reversed(self._config().start_order()) if n in chosen]
        order += [n for n in names if n not in order]
        for name in order:
            tasks[name] = self._loop.create_task(stop_one(name))
        await asyncio.gather(*tasks.values(), return_exceptions=True)
