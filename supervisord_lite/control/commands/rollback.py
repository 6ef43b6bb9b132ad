"""``rollback``: deploy the app's previous release again.

The declaration and the daemon's side: one call into the supervisor, which returns
when the app's instances all run the previous release. supctl prints progress, then
the result's message (``web: rolled back to r41``) or the ``done`` line.
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import APP, EXIT_NO_SUCH_APP, NO_SUCH_APP, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call, Progress

    class API(Protocol):
        """What ``rollback`` needs from the supervisor."""

        async def rollback(
            self,
            app: str,
            progress: Progress,
            uid: int | None = None,  # the caller's, for the history and the notify hooks
        ) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    return await call.api.rollback(call.args["app"], call.progress, uid=call.uid)


ROLLBACK = CommandSpec(
    "rollback",
    "deploy the previous release",
    (APP,),
    done="{app}: rolled back",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)
