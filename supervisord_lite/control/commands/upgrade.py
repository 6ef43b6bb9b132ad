"""``upgrade``: re-execute the daemon (new code), keeping every child and socket.

The declaration and the daemon's side: one call into the supervisor, which returns
once the re-exec is under way (it happens after the answer is sent). supctl then
waits for the new image to answer (:func:`supctl.main.wait_for_new_image`).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import EXIT_FAILED, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call, Progress

    class API(Protocol):
        """What ``upgrade`` needs from the supervisor."""

        async def upgrade(self, progress: Progress) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    return await call.api.upgrade(call.progress)


UPGRADE = CommandSpec(
    "upgrade",
    "re-execute the supervisor (new code), keeping every child and socket",
    done="supervisor upgraded",
    exits={EXIT_FAILED: "failed and nothing changed or the daemon did not come back in 60 s"},
    progress=True,
)
