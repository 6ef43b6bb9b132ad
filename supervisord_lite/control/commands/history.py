"""``history``: the recorded events, newest first (commands, swaps, deploys, crashes).

The declaration, the daemon's side (one call: the supervisor's event history) and how
supctl shows it (one line per event, in local time, app text made printable).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

import time

from .spec import ArgKind, ArgSpec, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call
    from .spec import Screen

    class API(Protocol):
        """What ``history`` needs from the supervisor."""

        def history(self, app: str | None, count: int) -> list[dict[str, Any]]: ...


# --------------------------------------------------------------------------- daemon


async def handle(call: Call[API]) -> Any:
    return {"events": call.api.history(call.args["app"], call.args["count"])}


# --------------------------------------------------------------------------- supctl

_EVENT_COLOURS = {
    "crash": "red",
    "fatal": "red",
    "unhealthy": "red",
    "start_failed": "red",
    "backoff": "yellow",
    "memory": "yellow",
}
# the fields of an event worth a glance, after its message (the rest: --json)
_EVENT_KEYS = ("result", "phase", "duration_s", "uid", "pid", "exit_status", "release")
# the pipeline's events (artifact, task, hook) name their duration ``seconds``, as a
# deploy's answer does: shown as every other event's duration_s
_ALIASES = {"duration_s": "seconds"}


_CONTROL_CHARS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """App-controlled text (a reason quoting its output) without terminal escapes."""
    return text.translate(_CONTROL_CHARS)


def _glance(event: dict[str, Any], failed: bool) -> str:
    """``key=value`` of the fields worth a glance; a failure's last line of output."""
    shown = []
    for key in _EVENT_KEYS:
        value = event.get(key)
        if value is None and key in _ALIASES:
            value = event.get(_ALIASES[key])
        if value is not None:
            shown.append(f"{key}={value}")
    output = event.get("output")
    if failed and isinstance(output, list) and output:
        shown.append(f'output="{output[-1]}"')
    return " ".join(shown)


def history_lines(events: list[Any], screen: Screen) -> list[str]:
    """One line per event, newest first, in local time."""
    lines: list[str] = []
    for event in events:
        if not isinstance(event, dict):
            continue
        ts = event.get("ts")
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        except (TypeError, ValueError, OverflowError, OSError):
            when = str(event.get("time", "-"))
        kind = str(event.get("kind", "-"))
        failed = event.get("result") not in (None, "ok")
        hue = "red" if failed else _EVENT_COLOURS.get(kind)
        app, instance = event.get("app"), event.get("instance")
        target = f"{app}:{instance}" if app and instance else str(app or "-")
        extra = _glance(event, failed)
        text = printable("  ".join(filter(None, [target, str(event.get("message", "")), extra])))
        lines.append(f"{when}  {screen.paint(f'{printable(kind):<12}', hue)}  {text}")
    return lines or ["no events recorded"]


def show(screen: Screen, args: dict[str, Any], result: Any) -> list[str]:
    if not isinstance(result, dict):
        return screen.outcome(HISTORY, args, result)
    return history_lines(result.get("events") or [], screen)


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
    show=show,
    read_only=True,
)
