"""``promote``: continue a deploy started with ``--pause`` (the primary follows the backup).

The declaration and the daemon's side: one call into the supervisor, which returns
when the app's instances all run the deployed release. supctl prints progress, then
the ``done`` line (or the result's message).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import APP, EXIT_NO_SUCH_APP, NO_SUCH_APP, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call, Progress

    class API(Protocol):
        """What ``promote`` needs from the supervisor."""

        async def promote(
            self,
            app: str,
            progress: Progress,
            uid: int | None = None,  # the caller's, for the history and the notify hooks
        ) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    return await call.api.promote(call.args["app"], call.progress, uid=call.uid)


PROMOTE = CommandSpec(
    "promote",
    "continue a deploy started with --pause",
    (APP,),
    done="{app}: promoted",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)
