"""``shutdown``: stop every app gracefully, then the daemon exits.

The declaration and the daemon's side: one call into the supervisor, which returns
once the stop is under way (the daemon exits after the answer is sent). supctl
prints progress, then the ``done`` line.
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call, Progress

    class API(Protocol):
        """What ``shutdown`` needs from the supervisor."""

        async def shutdown(self, progress: Progress) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    return await call.api.shutdown(call.progress)


SHUTDOWN = CommandSpec(
    "shutdown",
    "stop everything gracefully, then the daemon exits",
    done="shut down",
    progress=True,
)
