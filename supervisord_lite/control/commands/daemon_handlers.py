"""The daemon's side of ``upgrade`` and ``shutdown`` (declared in :mod:`.daemon`)."""

from __future__ import annotations

from typing import Any, Protocol

from .call import Call, Handler, Progress
from .daemon import SHUTDOWN, UPGRADE


class DaemonAPI(Protocol):
    """What these commands need from the supervisor; both return once the daemon has
    been asked (the re-exec or the stop happens after the answer is sent)."""

    async def upgrade(self, progress: Progress) -> dict[str, Any]: ...

    async def shutdown(self, progress: Progress) -> dict[str, Any]: ...


async def upgrade(call: Call[DaemonAPI]) -> Any:
    return await call.api.upgrade(call.progress)


async def shutdown(call: Call[DaemonAPI]) -> Any:
    return await call.api.shutdown(call.progress)


HANDLERS: dict[str, Handler[DaemonAPI]] = {
    UPGRADE.name: upgrade,
    SHUTDOWN.name: shutdown,
}
