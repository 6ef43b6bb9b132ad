"""Starting and stopping: ``start``, ``stop``, ``restart`` and ``signal`` (declarations).

Their handlers are in :mod:`.lifecycle_handlers`.
"""

from __future__ import annotations

from .spec import EXIT_NO_SUCH_APP, NO_SUCH_APP, TARGET, ArgKind, ArgSpec, CommandSpec

START = CommandSpec(
    "start",
    "start an app or instance; returns when it is ready, or fails with the reason",
    (TARGET,),
    done="{target}: started",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)

STOP = CommandSpec(
    "stop",
    "stop gracefully (signal, timeout, then SIGKILL of the process group)",
    (TARGET,),
    done="{target}: stopped",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)

RESTART = CommandSpec(
    "restart",
    "stop then start (has downtime; reload does not)",
    (TARGET,),
    done="{target}: restarted",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)

SIGNAL = CommandSpec(
    "signal",
    "send a signal to an app's or instance's processes",
    (TARGET, ArgSpec("signal", ArgKind.SIGNAL, "signal name (HUP, SIGUSR1) or number")),
    done="{target}: sent {signal}",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
)

COMMANDS = (START, STOP, RESTART, SIGNAL)
