"""What ``supctl`` shows: human text (aligned tables, colour on a terminal) or JSON lines.

Owns how supctl shows things, shared by every command: the palette and the state
colours, aligned tables, progress lines, errors with the app's last output, a
command's usual success line (its declaration's ``done``), the exit status an error
code means, and :class:`Output`, which writes them (human or ``--json``). What one
command's answer looks like (the status table's columns, history lines, a plan) is
in that command's module, whose printer :class:`Output` calls as a
:class:`~control.commands.spec.Screen`. App-controlled text is made inert
(:mod:`.escape`, imported only then) on a terminal.

Standard library only (plus :mod:`.escape`, :mod:`errors` and the declarations):
imported on every ``supctl`` run.
"""

from __future__ import annotations

import json
import os

from ..control import protocol
from ..control.commands.spec import EXIT_FAILED, EXIT_OK, ArgKind, Cell, CommandSpec
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


_RIGHT_ALIGNED = {"PID", "UPTIME", "RESTARTS", "RSS"}


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
    for arg in spec.args:  # a signal by its name, however it was typed (HUP, 1)
        if arg.kind is ArgKind.SIGNAL and arg.name in args:
            fields[arg.name] = protocol.signal_name(protocol.parse_signal(args[arg.name]))
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

    # --- what a command's printer gets (control.commands.spec.Screen) -------------

    def text(self, text: str) -> str:
        """App-controlled text as stdout may show it (made inert on a terminal)."""
        return self._escape(text) if self.inert_out else text

    def paint(self, text: str, colour: str | None) -> str:
        """``text`` in a colour of the palette, when stdout takes colour."""
        return paint(text, colour, self.colour_out)

    def state_colour(self, state: str) -> str | None:
        """The colour an instance state is shown in."""
        return STATE_COLOURS.get(state)

    def table(self, header: tuple[str, ...], rows: list[list[Cell]]) -> list[str]:
        """Aligned columns, cells' text made inert on a terminal, coloured."""
        if self.inert_out:
            rows = [[(self._escape(text), hue) for text, hue in row] for row in rows]
        return render_table(header, rows, self.colour_out)

    def outcome(self, spec: CommandSpec, args: dict[str, Any], result: Any) -> list[str]:
        """The usual success lines: the result's message or the ``done`` line, then details."""
        return [self.text(line) for line in format_result(spec, args, result)]

    # --- showing messages -----------------------------------------------------------

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
            self.stdout.write(f"{self.text(str(message.get('line', '')))}\n")
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
        """A successful answer as the lines a person reads: as its command shows it."""
        result = msg.get("result")
        if spec.show is not None:
            return spec.show(self, args, result)
        return self.outcome(spec, args, result)

    def client_error(self, code: ErrorCode, message: str) -> int:
        """A failure found on this side (usage, unreachable): shown like a daemon's."""
        error = {"code": code.value, "message": message}
        if self.as_json:
            self._json(protocol.error_response(None, error))
        self.stderr.write(f"{PROG}: {message}\n")
        return EXIT_STATUS[code]
