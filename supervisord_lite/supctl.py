"""``supctl``: the operator's command line for a running daemon.

Owns the client end of the control protocol: the argument parser (built from
:data:`protocol.COMMANDS`, so help, parsing and the wire format come from one
declaration per command), finding the socket (``-s``, ``$SUPCTL_SOCKET``, the
default state dir), one request per run over a plain blocking unix socket, showing
progress as it arrives, human output (aligned tables, colour on a terminal) or JSON
lines (``--json``), and exit statuses (0 ok, 1 failed, 2 usage, 3 unreachable,
4 no such app).

Imports only the standard library and the light ``protocol``/``errors``/``paths``
modules: ``supctl status`` costs a Python start-up and one round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

# the C socket type, without socket.py: its enum conversions cost a few ms on every run
# and supctl needs one blocking unix stream socket (readline is done by _lines)
from _socket import AF_UNIX, SOCK_STREAM
from _socket import socket as _Socket
from collections.abc import Iterator
from typing import Any, TextIO

from . import inert, paths, protocol
from .errors import EXIT_STATUS, ErrorCode, ProtocolError, UsageError

PROG = "supctl"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_RUNNING = 5  # status: something that should run is not RUNNING, or is unhealthy
EXIT_INTERRUPTED = 130

REQUEST_ID = 1  # one request per run


# --------------------------------------------------------------------------- parser


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: one subcommand per registered command (or only ``only``:
    building all of them is a fifth of a `supctl status`)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Control a running supervisord-lite daemon.",
        epilog="Exit status: 0 ok, 1 failed, 2 usage or config error, "
        "3 daemon unreachable, 4 no such app or instance; status: 5 when something "
        "that should run is not RUNNING and healthy; plan: 1 when there are changes.",
    )
    _add_global_options(parser, suppress=False)
    # The same options after the command (supctl status --json); SUPPRESS keeps a
    # subcommand from overwriting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in (*protocol.COMMANDS.values(), *protocol.LOCAL_COMMANDS.values()):
        if only is not None and spec.name != only:
            continue
        sub = commands.add_parser(
            spec.name, help=spec.help, description=spec.help, parents=[common]
        )
        for arg in spec.args:
            _add_argument(sub, arg)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command named by ``argv`` when it is plain to see (no help asked), else None."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in ("-s", "--socket"):
            skip = True
        elif token in ("-h", "--help", "--"):
            return None
        elif not token.startswith("-"):
            known = token in protocol.COMMANDS or token in protocol.LOCAL_COMMANDS
            return token if known and "-h" not in argv and "--help" not in argv else None
    return None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse with the one command's parser; on any usage error, again with the full
    parser, so that the message (and the list of commands) is the usual one."""
    only = _command_in(sys.argv[1:] if argv is None else argv)
    if only is not None:
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                return build_parser(only).parse_args(argv)
        except SystemExit:
            pass
    return build_parser().parse_args(argv)


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    parser.add_argument(
        "-s",
        "--socket",
        metavar="SOCKET",
        default=argparse.SUPPRESS if suppress else None,
        help="the daemon's control socket (default: $SUPCTL_SOCKET, else the state dir's)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="machine output: JSON lines (progress events, then the final response)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the apps' text as it is, control characters included (by default "
        "they are escaped, as \\x1b, on a terminal)",
    )


def _add_argument(parser: argparse.ArgumentParser, arg: protocol.ArgSpec) -> None:
    """One registry argument as an argparse argument (values are checked later, once)."""
    kind = arg.kind
    if kind is protocol.ArgKind.FLAG:
        parser.add_argument(*arg.flags, dest=arg.name, action="store_true", help=arg.help)
        return
    value_type = int if kind is protocol.ArgKind.INT else str
    if arg.flags:
        parser.add_argument(
            *arg.flags, dest=arg.name, type=value_type, metavar=arg.metavar, help=arg.help
        )
    elif kind is protocol.ArgKind.APPS:
        parser.add_argument(arg.name, nargs="*", metavar=arg.metavar, help=arg.help)
    else:
        parser.add_argument(
            arg.name,
            nargs=None if arg.required else "?",
            type=value_type,
            metavar=arg.metavar,
            help=arg.help,
        )


def wire_args(spec: protocol.CommandSpec, namespace: argparse.Namespace) -> dict[str, Any]:
    """The request's args: what the operator gave; the daemon fills in defaults."""
    args: dict[str, Any] = {}
    for arg in spec.args:
        value = getattr(namespace, arg.name, None)
        if arg.local or value is None or (arg.kind is protocol.ArgKind.FLAG and not value):
            continue
        args[arg.name] = value
    return args


def socket_path(option: str | None) -> str:
    """``-s SOCKET``, else ``$SUPCTL_SOCKET``, else the default state dir's socket."""
    return option or os.environ.get("SUPCTL_SOCKET") or paths.default_control_socket()


# --------------------------------------------------------------------------- client


class Unreachable(Exception):
    """The daemon could not be reached, or hung up before it answered."""


def connect(path: str) -> contextlib.closing[_Socket]:
    """A connected blocking socket to the daemon; :class:`Unreachable` if there is none."""
    sock = _Socket(AF_UNIX, SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise Unreachable(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from None
    return contextlib.closing(sock)


def _lines(sock: _Socket) -> Iterator[bytes]:
    """The lines the daemon sends (the last one may lack its newline), as they arrive."""
    buf = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            if buf:
                yield bytes(buf)
            return
        buf += chunk
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            yield bytes(buf[start : end + 1])
            start = end + 1
        del buf[:start]


def exchange(sock: _Socket, path: str, line: bytes) -> Iterator[dict[str, Any]]:
    """Send one encoded request; yield its events as they arrive, then its final response."""
    # The daemon may have refused us and hung up already: its answer is still readable.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(line)
    try:
        for raw in _lines(sock):
            if not raw.strip():
                continue
            message = protocol.decode(raw, limit=None)
            # id null: an answer to the connection itself (refused peer, bad line).
            if message.get("id") not in (REQUEST_ID, None):
                continue
            yield message
            if not protocol.is_event(message):
                return
    except ConnectionResetError:
        pass
    raise Unreachable(f"the daemon at {path} hung up before answering")


# --------------------------------------------------------------------------- output

_RESET = "\033[0m"
_COLOURS = {"green": "\033[32m", "yellow": "\033[33m", "red": "\033[31m", "dim": "\033[2m"}
STATE_COLOURS = {
    "RUNNING": "green",
    "STARTING": "yellow",
    "STOPPING": "yellow",
    "BACKOFF": "yellow",
    "FATAL": "red",
    "EXITED": "red",
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

    def line(cells: list[Cell]) -> str:
        out = []
        for i, (text, hue) in enumerate(cells):
            # Pad by the visible text, so colour escape codes never disturb alignment.
            pad = " " * (widths[i] - len(text))
            painted = paint(text, hue, colour)
            if header[i] in _RIGHT_ALIGNED:
                out.append(pad + painted)
            else:
                out.append(painted if i == len(cells) - 1 else painted + pad)
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


def format_result(spec: protocol.CommandSpec, args: dict[str, Any], result: Any) -> list[str]:
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


class _DefaultDict(dict[str, Any]):
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

    def _out(self, text: str) -> str:
        return inert.escape(text) if self.inert_out else text

    def _err(self, text: str) -> str:
        return inert.escape(text) if self.inert_err else text

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

    def final(self, spec: protocol.CommandSpec, args: dict[str, Any], msg: dict[str, Any]) -> int:
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
            self.stdout.write("".join(line + "\n" for line in self._human(spec, args, msg)))
        return EXIT_OK

    def _human(
        self, spec: protocol.CommandSpec, args: dict[str, Any], msg: dict[str, Any]
    ) -> list[str]:
        result = msg.get("result")
        if spec.name == "status" and isinstance(result, dict):
            if not result.get("apps"):
                return ["no apps configured"]
            rows = [[(self._out(text), hue) for text, hue in row] for row in status_rows(result)]
            notes = [
                paint(self._out(note), "dim", self.colour_out) for note in status_notes(result)
            ]
            return render_table(STATUS_COLUMNS, rows, self.colour_out) + notes
        if spec.name == "history" and isinstance(result, dict):
            return history_lines(result.get("events") or [], self.colour_out)
        if is_plan(spec, args) and isinstance(result, dict):
            return [str(line) for line in result.get("text") or []]
        if spec.name == "logs" and isinstance(result, dict):
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


# --------------------------------------------------------------------------- entry


def run(
    argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Parse ``argv``, run one command against the daemon, return the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        namespace = _parse(argv)
    except SystemExit as exc:  # argparse has printed help or the usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(namespace.json, stdout, stderr, namespace.raw)
    if namespace.command == "completion":
        return print_completion(namespace.shell, out)
    spec = protocol.COMMANDS[namespace.command]
    args = wire_args(spec, namespace)
    try:
        protocol.validate_args(spec, args)  # the daemon checks too; fail before connecting
        line = protocol.encode(protocol.request(REQUEST_ID, spec.name, args))
    except (UsageError, ProtocolError) as exc:  # ProtocolError: a request over MAX_LINE
        return out.client_error(ErrorCode.USAGE, exc.message)
    path = socket_path(namespace.socket)
    if getattr(namespace, "watch", False):
        from . import watch  # only when asked: plain `supctl status` stays light

        def fetch() -> tuple[int, list[str]]:
            return status_once(out, spec, args, path, line)

        return watch.loop(fetch, out.stdout, out.stderr, raw=out.as_json)
    try:
        with connect(path) as sock:
            for message in exchange(sock, path, line):
                if protocol.is_event(message):
                    out.event(message)
                else:
                    status = out.final(spec, args, message)
                    if status == EXIT_OK:
                        status = success_status(spec, args, message.get("result"), out)
                    if spec.name == "upgrade" and status == 0:
                        return wait_for_new_image(path, out)
                    return status
    except Unreachable as exc:
        return out.client_error(ErrorCode.UNREACHABLE, str(exc))
    except ProtocolError as exc:
        return out.client_error(ErrorCode.PROTOCOL, f"bad answer from the daemon: {exc.message}")
    raise AssertionError("exchange() ends with a final response or Unreachable")


def status_once(
    out: Output, spec: protocol.CommandSpec, args: dict[str, Any], path: str, line: bytes
) -> tuple[int, list[str]]:
    """One status round of ``--watch``: (exit status, lines to show)."""
    try:
        with connect(path) as sock:
            message = [m for m in exchange(sock, path, line) if not protocol.is_event(m)][-1]
    except Unreachable as exc:
        return EXIT_UNREACHABLE, [f"{PROG}: {exc}"]
    except ProtocolError as exc:
        return EXIT_STATUS[ErrorCode.PROTOCOL], [f"{PROG}: bad answer from the daemon: {exc}"]
    error = message.get("error")
    status = EXIT_OK if message.get("ok") else exit_status(error if isinstance(error, dict) else {})
    if out.as_json:
        return status, [json.dumps(message)]
    if status != EXIT_OK:
        return status, format_error(error if isinstance(error, dict) else {})
    return status, out._human(spec, args, message)


def print_completion(shell: str, out: Output) -> int:
    """``supctl completion bash|zsh``: the script, from the command registry."""
    from . import completion  # only when asked: plain `supctl status` stays light

    commands = (*protocol.COMMANDS.values(), *protocol.LOCAL_COMMANDS.values())
    try:
        out.stdout.write(completion.script(shell, commands, sys.executable))
    except UsageError as exc:
        return out.client_error(ErrorCode.USAGE, exc.message)
    return EXIT_OK


def is_plan(spec: protocol.CommandSpec, args: dict[str, Any]) -> bool:
    return spec.name == "plan" or (spec.name == "update" and bool(args.get("dry_run")))


def success_status(
    spec: protocol.CommandSpec, args: dict[str, Any], result: Any, out: Output
) -> int:
    """The exit status of an answered command whose answer itself says something:
    ``status`` (is everything up?) and ``plan`` (is there something to do?)."""
    if not isinstance(result, dict):
        return EXIT_OK
    if spec.name == "status" and result.get("unhealthy"):
        if not out.as_json:
            out.stderr.write(
                f"{PROG}: not running as it should: {', '.join(result['unhealthy'])}\n"
            )
        return EXIT_NOT_RUNNING
    if is_plan(spec, args):
        if result.get("refused"):
            return EXIT_USAGE
        return EXIT_FAILED if result.get("changes") else EXIT_OK
    return EXIT_OK


UPGRADE_DEADLINE = 60.0


def wait_for_new_image(path: str, out: Output) -> int:
    """After ``upgrade`` was accepted, wait until the re-executed daemon answers.

    The new image's uptime restarts from zero, which tells it from the old one.
    """
    asked = time.monotonic()
    line = protocol.encode(protocol.request(REQUEST_ID, "status", {}))
    while time.monotonic() - asked < UPGRADE_DEADLINE:
        try:
            with connect(path) as sock:
                for message in exchange(sock, path, line):
                    if protocol.is_event(message):
                        continue
                    info = (message.get("result") or {}).get("supervisor", {})
                    if message.get("ok") and info.get("uptime_s", 1e9) <= time.monotonic() - asked:
                        out.event(
                            protocol.progress_event(
                                REQUEST_ID,
                                f"upgraded: daemon pid {info.get('pid')} runs "
                                f"version {info.get('version')}",
                                {},
                            )
                        )
                        return 0
                    break
        except (Unreachable, ProtocolError):
            pass  # between exec and the new image's first accept
        time.sleep(0.05)
    return out.client_error(
        ErrorCode.FAILED, f"the daemon did not come back within {UPGRADE_DEADLINE:g}s"
    )


def main() -> None:
    """The ``supctl`` console script."""
    # An app's output may not be encodable in the terminal's encoding; show it anyway.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    try:
        status = run()
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED  # Ctrl-C ends `logs -f`; no traceback
    except BrokenPipeError:
        # stdout closed early (supctl logs | head): stop quietly, and keep Python's
        # shutdown flush from complaining about the same closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_FAILED
    sys.exit(status)


if __name__ == "__main__":
    main()
