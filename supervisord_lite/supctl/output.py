"""What ``supctl`` shows: human text (aligned tables, colour on a terminal) or JSON lines.

Owns every line supctl prints for an answer: the status table and its notes, history
lines, progress lines, errors with the app's last output, a command's success line
(its declaration's ``done``), and the exit status an error code means. App-controlled
text is made inert (:mod:`inert`, imported only then) on a terminal.

Standard library only (plus :mod:`inert`, :mod:`errors` and the declarations):
imported on every ``supctl`` run.
"""

from __future__ import annotations

import json
import os
import time

from ..control import protocol
from ..control.commands.changes import PLAN, UPDATE
from ..control.commands.spec import EXIT_FAILED, EXIT_OK, CommandSpec
from ..control.commands.views import HISTORY, LOGS, STATUS
from ..errors import EXIT_STATUS, ErrorCode
from ..instance.state import State
from .args import PROG

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, TextIO

_RESET = "\033[0m"
_COLOURS = {"green": "\033[32m", "yellow": "\033[33m", "red": "\033[31m", "dim": "\033[2m"}
STATE_COLOURS: dict[str, str | None] = {
    State.STOPPED: None,  # by intent: nothing to draw the eye
    State.RUNNING: "green",
    State.STARTING: "yellow",
    State.STOPPING: "yellow",
    State.BACKOFF: "yellow",
    State.FATAL: "red",
    State.EXITED: "red",
}


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def paint(text: str, colour: str | None, enabled: bool) -> str:
    if not enabled or colour is None or not text:
        return text
    return f"{_COLOURS[colour]}{text}{_RESET}"


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


def _health(healthy: Any) -> tuple[str, str | None]:
    if healthy is None:
        return "-", None
    return ("healthy", "green") if healthy else ("unhealthy", "red")


Cell = tuple[str, str | None]  # text, colour
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
_RIGHT_ALIGNED = {"PID", "UPTIME", "RESTARTS", "RSS"}


def status_rows(result: dict[str, Any]) -> list[list[Cell]]:
    """One table row per instance (one per app without instances)."""
    rows: list[list[Cell]] = []
    for app_name, app in sorted(result.get("apps", {}).items()):
        instances = app.get("instances") or {}
        if not instances:
            state = app.get("state", "-")
            rows.append(
                [(app_name, None), ("-", None), (state, STATE_COLOURS.get(state))]
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
                    (state, STATE_COLOURS.get(state)),
                    (str(pid) if pid is not None else "-", None),
                    (format_uptime(inst.get("uptime_s")), None),
                    (str(inst.get("restarts", 0)), None),
                    _health(inst.get("healthy")),
                    (inst.get("release") or app.get("release") or "-", None),
                    (format_rss(inst.get("rss_bytes")), None),
                ]
            )
    return rows


def render_table(header: tuple[str, ...], rows: list[list[Cell]], colour: bool) -> list[str]:
    """Columns aligned on the visible text; colour codes are added after padding."""
    widths = [len(title) for title in header]
    for row in rows:
        for i, (text, _) in enumerate(row):
            widths[i] = max(widths[i], len(text))

    right = [title in _RIGHT_ALIGNED for title in header]
    last = len(header) - 1

    def line(cells: list[Cell]) -> str:
        out = []
        for i, (text, hue) in enumerate(cells):
            # Pad by the visible text, so colour escape codes never disturb alignment.
            pad = " " * (widths[i] - len(text))
            painted = paint(text, hue, colour) if colour else text
            if right[i]:
                out.append(pad + painted)
            else:
                out.append(painted if i == last else painted + pad)
        return "  ".join(out)

    return [line([(title, None) for title in header])] + [line(row) for row in rows]


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


def format_progress(event: dict[str, Any], colour: bool) -> str:
    """One progress event as a line: ``web:backup  STARTING  pid 1234  message``."""
    parts: list[str] = []
    app = event.get("app")
    if app:
        instance = event.get("instance")
        parts.append(f"{app}:{instance}" if instance else str(app))
    state = event.get("state")
    if state:
        parts.append(paint(str(state), STATE_COLOURS.get(str(state)), colour))
    if event.get("pid") is not None:
        parts.append(f"pid {event['pid']}")
    message = event.get("message")
    if message and message != state:
        parts.append(str(message))
    return "  ".join(parts)


_EVENT_COLOURS = {
    "crash": "red",
    "fatal": "red",
    "unhealthy": "red",
    "start_failed": "red",
    "backoff": "yellow",
    "memory": "yellow",
}
# the fields of an event worth a glance, after its message (the rest: --json)
_EVENT_KEYS = ("result", "duration_s", "uid", "pid", "exit_status", "release")


_CONTROL_CHARS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """App-controlled text (a reason quoting its output) without terminal escapes."""
    return text.translate(_CONTROL_CHARS)


def history_lines(events: list[Any], colour: bool) -> list[str]:
    """``history``: one line per event, newest first, in local time."""
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
        extra = " ".join(f"{k}={event[k]}" for k in _EVENT_KEYS if event.get(k) is not None)
        text = printable("  ".join(filter(None, [target, str(event.get("message", "")), extra])))
        lines.append(f"{when}  {paint(f'{printable(kind):<12}', hue, colour)}  {text}")
    return lines or ["no events recorded"]


def format_error(error: dict[str, Any]) -> list[str]:
    """A failure as lines for stderr: the reason, its details, the app's last output."""
    lines = [f"{PROG}: {error.get('message') or error.get('code', 'failed')}"]
    for key, value in error.items():
        if key in ("code", "message", "output") or value is None:
            continue
        lines.append(f"  {key}: {value}")
    output = error.get("output")
    if output:
        lines.append("  last output:")
        lines.extend(f"    {line}" for line in output)
    return lines


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def format_result(spec: CommandSpec, args: dict[str, Any], result: Any) -> list[str]:
    """A generic command's success: its message (or the spec's ``done`` line), then details."""
    fields = _DefaultDict(args, command=spec.name)
    if "signal" in args:
        fields["signal"] = protocol.signal_name(protocol.parse_signal(args["signal"]))
    if isinstance(result, dict) and isinstance(result.get("message"), str):
        lines = [result["message"]]
    else:
        lines = [spec.done.format_map(fields)]
    if isinstance(result, dict):
        for key, value in result.items():
            if key == "message" or value in (None, [], ""):
                continue
            if _scalar(value):
                lines.append(f"  {key}: {value}")
            elif isinstance(value, list) and all(_scalar(item) for item in value):
                lines.append(f"  {key}: {', '.join(str(item) for item in value)}")
    return lines


class _DefaultDict(dict[str, object]):
    """Leaves unknown ``{placeholders}`` of a ``done`` line as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def exit_status(error: dict[str, Any]) -> int:
    """The exit status for a wire error's code (1 for codes this supctl does not know)."""
    try:
        return EXIT_STATUS[ErrorCode(str(error.get("code")))]
    except ValueError:
        return EXIT_FAILED


class Output:
    """Where and how messages are shown: human (tables, colour) or JSON lines."""

    def __init__(self, as_json: bool, stdout: TextIO, stderr: TextIO, raw: bool = False) -> None:
        self.as_json = as_json
        self.stdout = stdout
        self.stderr = stderr
        self.colour_out = use_colour(stdout)
        self.colour_err = use_colour(stderr)
        # App-controlled text is made inert on a terminal; a pipe gets it as it is.
        self.inert_out = not raw and _isatty(stdout)
        self.inert_err = not raw and _isatty(stderr)
        if self.inert_out or self.inert_err:
            from . import escape  # only then: compiling its pattern costs a piped run 0.5 ms

            self._escape = escape.escape

    def _out(self, text: str) -> str:
        return self._escape(text) if self.inert_out else text

    def _err(self, text: str) -> str:
        return self._escape(text) if self.inert_err else text

    def _json(self, message: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(message) + "\n")
        self.stdout.flush()

    def event(self, message: dict[str, Any]) -> None:
        """Show an event at once: progress on stderr, log lines on stdout."""
        if self.as_json:
            self._json(message)
        elif message.get("event") == protocol.EVENT_LOG:
            self.stdout.write(f"{self._out(str(message.get('line', '')))}\n")
            self.stdout.flush()
        else:
            shown = {k: self._err(v) if isinstance(v, str) else v for k, v in message.items()}
            self.stderr.write(format_progress(shown, self.colour_err) + "\n")
            self.stderr.flush()

    def final(self, spec: CommandSpec, args: dict[str, Any], msg: dict[str, Any]) -> int:
        """Show the final response; return the exit status."""
        if self.as_json:
            self._json(msg)
        if not msg.get("ok"):
            error = msg.get("error")
            if not isinstance(error, dict):
                error = {"code": ErrorCode.PROTOCOL.value, "message": "malformed error response"}
            if not self.as_json:
                self.stderr.write("".join(self._err(ln) + "\n" for ln in format_error(error)))
            return exit_status(error)
        if not self.as_json:
            self.stdout.write("".join(line + "\n" for line in self.human(spec, args, msg)))
        return EXIT_OK

    def human(self, spec: CommandSpec, args: dict[str, Any], msg: dict[str, Any]) -> list[str]:
        """A successful answer as the lines a person reads."""
        result = msg.get("result")
        if spec.name == STATUS.name and isinstance(result, dict):
            if not result.get("apps"):
                return ["no apps configured"]
            rows = status_rows(result)
            if self.inert_out:
                rows = [[(self._escape(text), hue) for text, hue in row] for row in rows]
            notes = [
                paint(self._out(note), "dim", self.colour_out) for note in status_notes(result)
            ]
            return render_table(STATUS_COLUMNS, rows, self.colour_out) + notes
        if spec.name == HISTORY.name and isinstance(result, dict):
            return history_lines(result.get("events") or [], self.colour_out)
        if is_plan(spec, args) and isinstance(result, dict):
            return [str(line) for line in result.get("text") or []]
        if spec.name == LOGS.name and isinstance(result, dict):
            # A follow ends with a summary nobody needs; a tail is just its lines.
            return [self._out(str(line)) for line in result.get("lines") or []]
        return [self._out(line) for line in format_result(spec, args, result)]

    def client_error(self, code: ErrorCode, message: str) -> int:
        """A failure found on this side (usage, unreachable): shown like a daemon's."""
        error = {"code": code.value, "message": message}
        if self.as_json:
            self._json(protocol.error_response(None, error))
        self.stderr.write(f"{PROG}: {message}\n")
        return EXIT_STATUS[code]


def is_plan(spec: CommandSpec, args: dict[str, Any]) -> bool:
    """``plan``, or ``update --dry-run``: the answer is a plan, shown as its text."""
    return spec.name == PLAN.name or (spec.name == UPDATE.name and bool(args.get("dry_run")))
