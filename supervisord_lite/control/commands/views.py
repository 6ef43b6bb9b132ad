"""The read-only commands: ``status``, ``logs`` and ``history`` (declarations).

Their handlers are in :mod:`.views_handlers`; supctl shows their answers as a table,
the app's lines and one line per event.
"""

from __future__ import annotations

from .spec import (
    EXIT_INTERRUPTED,
    EXIT_NO_SUCH_APP,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    NO_SUCH_APP,
    TARGET,
    ArgKind,
    ArgSpec,
    CommandSpec,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _judge_status(args: dict[str, Any], result: Any) -> tuple[int, str | None]:
    """Exit 5 when the daemon answered but not everything that should run is up (the
    instances ``/healthz`` names), so a script can tell "down" from "cannot ask" (3)."""
    unhealthy = result.get("unhealthy") if isinstance(result, dict) else None
    if unhealthy:
        return EXIT_NOT_RUNNING, f"not running as it should: {', '.join(unhealthy)}"
    return EXIT_OK, None


STATUS = CommandSpec(
    "status",
    "show apps and instances: state, pid, uptime, restarts, health, release, rss",
    (
        ArgSpec("app", ArgKind.APP, "only this app", required=False),
        ArgSpec(
            "watch",
            ArgKind.FLAG,
            "redraw the table every second until Ctrl-C",
            required=False,
            flags=("-w", "--watch"),
            default=False,
            local=True,
        ),
    ),
    exits={
        EXIT_NO_SUCH_APP: NO_SUCH_APP,
        EXIT_NOT_RUNNING: "something that should run is not RUNNING and healthy",
    },
    judge=_judge_status,
    read_only=True,
)

LOGS = CommandSpec(
    "logs",
    "show an app's captured output",
    (
        TARGET,
        ArgSpec(
            "follow",
            ArgKind.FLAG,
            "keep printing new output until interrupted",
            required=False,
            flags=("-f", "--follow"),
            default=False,
        ),
        ArgSpec(
            "lines",
            ArgKind.INT,
            "how many of the last lines to show (default 50)",
            required=False,
            flags=("-n", "--lines"),
            default=50,
            minimum=0,
        ),
    ),
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP, EXIT_INTERRUPTED: "interrupted (Ctrl-C ends --follow)"},
    streams="follow",
    read_only=True,
)

HISTORY = CommandSpec(
    "history",
    "recorded events, newest first: commands (with the caller's uid and pid), swaps, "
    "deploys, crashes, health failures",
    (
        ArgSpec("app", ArgKind.APP, "only events of this app", required=False),
        ArgSpec(
            "count",
            ArgKind.INT,
            "how many of the newest events to show (default 50)",
            required=False,
            flags=("-n", "--count"),
            default=50,
            minimum=1,
        ),
    ),
    read_only=True,
)

COMMANDS = (STATUS, LOGS, HISTORY)
