"""The daemon itself: ``upgrade`` and ``shutdown`` (declarations).

Their handlers are in :mod:`.daemon_handlers`.
"""

from __future__ import annotations

from .spec import EXIT_FAILED, CommandSpec

UPGRADE = CommandSpec(
    "upgrade",
    "re-execute the supervisor (new code), keeping every child and socket",
    done="supervisor upgraded",
    exits={EXIT_FAILED: "failed and nothing changed or the daemon did not come back in 60 s"},
    progress=True,
)

SHUTDOWN = CommandSpec(
    "shutdown",
    "stop everything gracefully, then the daemon exits",
    done="shut down",
    progress=True,
)

COMMANDS = (UPGRADE, SHUTDOWN)
