"""The daemon's side of ``status``, ``logs`` and ``history`` (declared in :mod:`.views`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ... import snapshots
from .. import protocol
from .call import Call, Handler
from .views import HISTORY, LOGS, STATUS


class ViewsAPI(Protocol):
    """What these commands need from the supervisor."""

    def status(self, app: str | None) -> snapshots.SupervisorStatus: ...

    def log_tail(self, app: str, instance: str | None, lines: int) -> list[str]: ...

    def follow_logs(self, app: str, instance: str | None) -> AsyncIterator[str]: ...

    def history(self, app: str | None, count: int) -> list[dict[str, Any]]: ...


async def status(call: Call[ViewsAPI]) -> Any:
    snapshot = call.api.status(call.args["app"])
    # what /healthz judges, so that supctl's exit status says the same (docs/contract.md)
    return {**snapshot.to_json(), "unhealthy": snapshot.unhealthy()}


async def logs(call: Call[ViewsAPI]) -> Any:
    app, instance = call.args["target"]
    if not call.args["follow"]:
        return {"lines": call.api.log_tail(app, instance, call.args["lines"])}
    # Subscribe before reading the tail, so no line falls between the two.
    stream = call.api.follow_logs(app, instance)
    try:
        for line in call.api.log_tail(app, instance, call.args["lines"]):
            call.conn.send(protocol.log_event(call.request_id, line))
        return await _follow(call, stream)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def _follow(call: Call[ViewsAPI], stream: AsyncIterator[str]) -> Any:
    """Stream log lines until the client hangs up (or the stream ends)."""

    async def pump() -> int:
        count = 0
        async for line in stream:
            call.conn.send(protocol.log_event(call.request_id, line))
            # Backpressure: a client that reads slowly slows its own stream, nothing else.
            if not await call.conn.flush():
                break
            count += 1
        return count

    pumping = asyncio.ensure_future(pump())
    hangup = asyncio.ensure_future(call.conn.wait_hangup())
    try:
        await asyncio.wait({pumping, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, hangup):
            task.cancel()
        await asyncio.gather(pumping, hangup, return_exceptions=True)
    # A follow owns its connection to the end: whatever the client sent was its goodbye.
    call.conn.ended = True
    if pumping.cancelled():
        return {"followed": None}
    failure = pumping.exception()
    if failure is not None:
        raise failure  # NoSuchApp etc. raised by the stream
    return {"followed": pumping.result()}


async def history(call: Call[ViewsAPI]) -> Any:
    return {"events": call.api.history(call.args["app"], call.args["count"])}


HANDLERS: dict[str, Handler[ViewsAPI]] = {
    STATUS.name: status,
    LOGS.name: logs,
    HISTORY.name: history,
}
