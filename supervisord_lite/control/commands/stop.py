"""``stop``: stop an app or instance gracefully.

The declaration and the daemon's side: one call into the supervisor, which returns
when the instances have stopped (``{INSTANCE: {"state", "pid"}}``). supctl prints
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
        """What ``stop`` needs from the supervisor."""

        async def stop(
            self, app: str, instance: str | None, progress: Progress
        ) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    app, instance = call.args["target"]
    return await call.api.stop(app, instance, call.progress)


STOP = CommandSpec(
    "stop",
    "stop gracefully (signal, timeout, then SIGKILL of the process group)",
    (TARGET,),
    done="{target}: stopped",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)
