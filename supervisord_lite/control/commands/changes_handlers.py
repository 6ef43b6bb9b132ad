"""The daemon's side of ``reload``, ``update`` and ``plan`` (declared in :mod:`.changes`)."""

from __future__ import annotations

from typing import Any, Protocol

from .call import Call, Handler, Progress
from .changes import PLAN, RELOAD, UPDATE


class ChangesAPI(Protocol):
    """What these commands need from the supervisor."""

    async def reload(self, apps: list[str], progress: Progress) -> dict[str, Any]: ...

    async def update(self, progress: Progress, allow_empty: bool = False) -> dict[str, Any]: ...

    async def plan(self, allow_empty: bool = False) -> dict[str, Any]: ...


async def reload(call: Call[ChangesAPI]) -> Any:
    return await call.api.reload(call.args["apps"], call.progress)


async def update(call: Call[ChangesAPI]) -> Any:
    if call.args["dry_run"]:
        return await call.api.plan(call.args["allow_empty"])
    return await call.api.update(call.progress, call.args["allow_empty"])


async def plan(call: Call[ChangesAPI]) -> Any:
    return await call.api.plan(call.args["allow_empty"])


HANDLERS: dict[str, Handler[ChangesAPI]] = {
    RELOAD.name: reload,
    UPDATE.name: update,
    PLAN.name: plan,
}
