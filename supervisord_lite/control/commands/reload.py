"""``reload``: a zero-downtime hot swap of each instance of some apps, or of all.

The declaration and the daemon's side: one call into the supervisor, which returns
when every instance runs its new generation (backup first). supctl prints progress,
then the ``done`` line (or the result's message).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import EXIT_NO_SUCH_APP, NO_SUCH_APP, ArgKind, ArgSpec, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call, Progress

    class API(Protocol):
        """What ``reload`` needs from the supervisor."""

        async def reload(self, apps: list[str], progress: Progress) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    return await call.api.reload(call.args["apps"], call.progress)


RELOAD = CommandSpec(
    "reload",
    "zero-downtime hot swap of each instance, backup first; no APP means all apps",
    (ArgSpec("apps", ArgKind.APPS, "apps to reload (default: all)", False, default=()),),
    done="reloaded",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)
