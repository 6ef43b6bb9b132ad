"""``logs``: an app's captured output, its last lines or followed until Ctrl-C.

The declaration, the daemon's side (the tail, or the tail then every new line,
streamed with backpressure until the client hangs up) and how supctl shows a tail
(its lines, made inert on a terminal; followed lines arrive as events).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import (
    EXIT_INTERRUPTED,
    EXIT_NO_SUCH_APP,
    NO_SUCH_APP,
    TARGET,
    ArgKind,
    ArgSpec,
    CommandSpec,
)

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Any, Protocol

    from .call import Call
    from .spec import Screen

    class API(Protocol):
        """What ``logs`` needs from the supervisor."""

        def log_tail(self, app: str, instance: str | None, lines: int) -> list[str]: ...

        def follow_logs(self, app: str, instance: str | None) -> AsyncIterator[str]: ...


# --------------------------------------------------------------------------- daemon


async def handle(call: Call[API]) -> Any:
    app, instance = call.args["target"]
    if not call.args["follow"]:
        return {"lines": call.api.log_tail(app, instance, call.args["lines"])}
    # Subscribe before reading the tail, so no line falls between the two.
    stream = call.api.follow_logs(app, instance)
    try:
        for line in call.api.log_tail(app, instance, call.args["lines"]):
            call.send_line(line)
        return await _follow(call, stream)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def _follow(call: Call[API], stream: AsyncIterator[str]) -> Any:
    """Stream log lines until the client hangs up (or the stream ends)."""
    import asyncio  # here: supctl imports this module and must not load asyncio

    async def pump() -> int:
        count = 0
        async for line in stream:
            call.send_line(line)
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


# --------------------------------------------------------------------------- supctl


def show(screen: Screen, args: dict[str, Any], result: Any) -> list[str]:
    """A tail is just its lines; a follow ends with a summary nobody needs."""
    if not isinstance(result, dict):
        return screen.outcome(LOGS, args, result)
    return [screen.text(str(line)) for line in result.get("lines") or []]


LOGS = CommandSpec(
    "logs",
    "show an app's captured output",
    (
        TARGET,
        ArgSpec(
            "follow",
            ArgKind.FLAG,
            "keep printing new output until interrupted",
            required=False,
            flags=("-f", "--follow"),
            default=False,
        ),
        ArgSpec(
            "lines",
            ArgKind.INT,
            "how many of the last lines to show (default 50)",
            required=False,
            flags=("-n", "--lines"),
            default=50,
            minimum=0,
        ),
    ),
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP, EXIT_INTERRUPTED: "interrupted (Ctrl-C ends --follow)"},
    show=show,
    streams="follow",
    read_only=True,
)
