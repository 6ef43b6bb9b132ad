"""The daemon's side of ``start``, ``stop``, ``restart`` and ``signal`` (:mod:`.lifecycle`)."""

from __future__ import annotations

from typing import Any, Protocol

from .call import Call, Handler, Progress
from .lifecycle import RESTART, SIGNAL, START, STOP


class LifecycleAPI(Protocol):
    """What these commands need from the supervisor; each returns when it is done
    (ready, stopped) with ``{INSTANCE: {"state", "pid"}}`` (``signal``: the pids)."""

    async def start(self, app: str, instance: str | None, progress: Progress) -> dict[str, Any]: ...

    async def stop(self, app: str, instance: str | None, progress: Progress) -> dict[str, Any]: ...

    async def restart(
        self, app: str, instance: str | None, progress: Progress
    ) -> dict[str, Any]: ...

    async def signal(self, app: str, instance: str | None, signum: int) -> dict[str, Any]: ...


async def start(call: Call[LifecycleAPI]) -> Any:
    app, instance = call.args["target"]
    return await call.api.start(app, instance, call.progress)


async def stop(call: Call[LifecycleAPI]) -> Any:
    app, instance = call.args["target"]
    return await call.api.stop(app, instance, call.progress)


async def restart(call: Call[LifecycleAPI]) -> Any:
    app, instance = call.args["target"]
    return await call.api.restart(app, instance, call.progress)


async def signal(call: Call[LifecycleAPI]) -> Any:
    app, instance = call.args["target"]
    return await call.api.signal(app, instance, call.args["signal"])


HANDLERS: dict[str, Handler[LifecycleAPI]] = {
    START.name: start,
    STOP.name: stop,
    RESTART.name: restart,
    SIGNAL.name: signal,
}
