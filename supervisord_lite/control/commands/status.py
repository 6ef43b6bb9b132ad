"""``status``: every app and instance at a glance; exit 5 when something is not up.

The declaration, the daemon's side (one call: the supervisor's status snapshot, with
what ``/healthz`` judges) and how supctl shows the answer (the table and its notes).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import (
    EXIT_NO_SUCH_APP,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    NO_SUCH_APP,
    ArgKind,
    ArgSpec,
    CommandSpec,
)

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from ...snapshots import SupervisorStatus
    from .call import Call
    from .spec import Cell, Screen

    class API(Protocol):
        """What ``status`` needs from the supervisor."""

        def status(self, app: str | None) -> SupervisorStatus: ...


# --------------------------------------------------------------------------- daemon


async def handle(call: Call[API]) -> Any:
    snapshot = call.api.status(call.args["app"])
    # what /healthz judges, so that supctl's exit status says the same (docs/contract.md)
    return {**snapshot.to_json(), "unhealthy": snapshot.unhealthy()}


# --------------------------------------------------------------------------- supctl


def _judge(args: dict[str, Any], result: Any) -> tuple[int, str | None]:
    """Exit 5 when the daemon answered but not everything that should run is up (the
    instances ``/healthz`` names), so a script can tell "down" from "cannot ask" (3)."""
    unhealthy = result.get("unhealthy") if isinstance(result, dict) else None
    if unhealthy:
        return EXIT_NOT_RUNNING, f"not running as it should: {', '.join(unhealthy)}"
    return EXIT_OK, None


def format_uptime(seconds: float | None) -> str:
    """``192`` -> ``3m12s``; ``None`` -> ``-``."""
    if seconds is None:
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_rss(rss_bytes: int | None) -> str:
    """Resident memory in MiB: ``52428800`` -> ``50.0MiB``."""
    if rss_bytes is None:
        return "-"
    mib = rss_bytes / (1 << 20)
    return f"{mib:.0f}MiB" if mib >= 100 else f"{mib:.1f}MiB"


def _health(healthy: Any) -> Cell:
    if healthy is None:
        return "-", None
    return ("healthy", "green") if healthy else ("unhealthy", "red")


STATUS_COLUMNS = (
    "APP",
    "INSTANCE",
    "STATE",
    "PID",
    "UPTIME",
    "RESTARTS",
    "HEALTH",
    "RELEASE",
    "RSS",
)


def status_rows(result: dict[str, Any], screen: Screen) -> list[list[Cell]]:
    """One table row per instance (one per app without instances)."""
    rows: list[list[Cell]] = []
    for app_name, app in sorted(result.get("apps", {}).items()):
        instances = app.get("instances") or {}
        if not instances:
            state = app.get("state", "-")
            rows.append(
                [(app_name, None), ("-", None), (state, screen.state_colour(state))]
                + [("-", None)] * 4
                + [(app.get("release") or "-", None), ("-", None)]
            )
        for name, inst in instances.items():
            state = inst.get("state", "-")
            pid = inst.get("pid")
            rows.append(
                [
                    (app_name, None),
                    (name, None),
                    (state, screen.state_colour(state)),
                    (str(pid) if pid is not None else "-", None),
                    (format_uptime(inst.get("uptime_s")), None),
                    (str(inst.get("restarts", 0)), None),
                    _health(inst.get("healthy")),
                    (inst.get("release") or app.get("release") or "-", None),
                    (format_rss(inst.get("rss_bytes")), None),
                ]
            )
    return rows


def status_notes(result: dict[str, Any]) -> list[str]:
    """What a table cannot show: why instances failed, deploys in progress."""
    notes: list[str] = []
    for app_name, app in sorted(result.get("apps", {}).items()):
        deploy = app.get("deploy")
        if deploy:
            detail = ", ".join(f"{k}={v}" for k, v in deploy.items())
            notes.append(f"{app_name}: deploy in progress: {detail}")
        for name, inst in (app.get("instances") or {}).items():
            if inst.get("last_error"):
                notes.append(f"{app_name}:{name}: {inst['last_error']}")
    return notes


def show(screen: Screen, args: dict[str, Any], result: Any) -> list[str]:
    """The status table, then its notes dimmed (``--watch`` redraws the same lines)."""
    if not isinstance(result, dict):
        return screen.outcome(STATUS, args, result)
    if not result.get("apps"):
        return ["no apps configured"]
    notes = [screen.paint(screen.text(note), "dim") for note in status_notes(result)]
    return screen.table(STATUS_COLUMNS, status_rows(result, screen)) + notes


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
    judge=_judge,
    show=show,
    read_only=True,
)
