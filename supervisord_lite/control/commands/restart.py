"""``restart``: stop, then start (with downtime: ``reload`` has none).

The declaration and the daemon's side: one call into the supervisor, which returns
when the instances are ready again (``{INSTANCE: {"state", "pid"}}``). supctl prints
progress, then the ``done`` line (or the result's message).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import EXIT_NO_SUCH_APP, NO_SUCH_APP, TARGET, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call, Progress

    class API(Protocol):
        """What ``restart`` needs from the supervisor."""

        async def restart(
            self, app: str, instance: str | None, progress: Progress
        ) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    app, instance = call.args["target"]
    return await call.api.restart(app, instance, call.progress)


RESTART = CommandSpec(
    "restart",
    "stop then start (has downtime; reload does not)",
    (TARGET,),
    done="{target}: restarted",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)
