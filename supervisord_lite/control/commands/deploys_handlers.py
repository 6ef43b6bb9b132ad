"""The daemon's side of ``deploy``, ``promote`` and ``rollback`` (:mod:`.deploys`)."""

from __future__ import annotations

from typing import Any, Protocol

from .call import Call, Handler, Progress
from .deploys import DEPLOY, PROMOTE, ROLLBACK


class DeploysAPI(Protocol):
    """What these commands need from the supervisor; each returns when the app's
    instances all run the resulting release (or the deploy paused after the backup)."""

    async def deploy(
        self,
        app: str,
        release: str,
        pause: bool,
        progress: Progress,
        artifact: str | None = None,
        sha256: str | None = None,
        uid: int | None = None,  # the caller's, for the notify hooks
    ) -> dict[str, Any]: ...

    async def promote(self, app: str, progress: Progress) -> dict[str, Any]: ...

    async def rollback(self, app: str, progress: Progress) -> dict[str, Any]: ...


async def deploy(call: Call[DeploysAPI]) -> Any:
    args = call.args
    return await call.api.deploy(
        args["app"],
        args["release"],
        args["pause"],
        call.progress,
        artifact=args.get("artifact"),
        sha256=args.get("sha256"),
        uid=call.uid,
    )


async def promote(call: Call[DeploysAPI]) -> Any:
    return await call.api.promote(call.args["app"], call.progress)


async def rollback(call: Call[DeploysAPI]) -> Any:
    return await call.api.rollback(call.args["app"], call.progress)


HANDLERS: dict[str, Handler[DeploysAPI]] = {
    DEPLOY.name: deploy,
    PROMOTE.name: promote,
    ROLLBACK.name: rollback,
}
