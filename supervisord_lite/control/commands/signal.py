"""``signal``: send a signal to an app's or instance's processes.

The declaration and the daemon's side: one call into the supervisor, which returns
the pids the signal went to. supctl prints the ``done`` line, naming the signal
(``web: sent SIGHUP``: supctl shows every SIGNAL argument by its name).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import EXIT_NO_SUCH_APP, NO_SUCH_APP, TARGET, ArgKind, ArgSpec, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call

    class API(Protocol):
        """What ``signal`` needs from the supervisor."""

        async def signal(self, app: str, instance: str | None, signum: int) -> dict[str, Any]: ...


async def handle(call: Call[API]) -> Any:
    app, instance = call.args["target"]
    return await call.api.signal(app, instance, call.args["signal"])


SIGNAL = CommandSpec(
    "signal",
    "send a signal to an app's or instance's processes",
    (TARGET, ArgSpec("signal", ArgKind.SIGNAL, "signal name (HUP, SIGUSR1) or number")),
    done="{target}: sent {signal}",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
)
