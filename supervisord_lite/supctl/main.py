"""``supctl``: the operator's command line for a running daemon.

Owns one run: the command line read (:mod:`.args`, derived from the command
registry), finding the socket (``-s``, ``$SUPCTL_SOCKET``, the default state dir),
one request per run over a plain blocking unix socket, showing progress as it
arrives and the answer (:mod:`.output`, through the command's own printer), and the
exit status: the error's, or what the command's declaration judges of its answer
(0 ok, 1 failed, 2 usage, 3 unreachable, 4 no such app; ``status`` 5, ``plan`` 1
for changes).

Imports only the standard library and light modules of ours (the declarations,
``protocol``, ``errors``, ``paths``), never the daemon's, nor argparse or typing for a
plain command line: ``supctl status`` costs a Python start-up and one round trip.
"""

from __future__ import annotations

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

from .. import paths
from ..control import protocol
from ..control.commands import COMMANDS
from ..control.commands.completion import COMPLETION
from ..control.commands.spec import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandSpec,
)
from ..control.commands.status import STATUS
from ..control.commands.upgrade import UPGRADE
from ..errors import EXIT_STATUS, ErrorCode, ProtocolError, UsageError
from .args import PROG, parse, wire_args
from .output import Output, exit_status, format_error

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, TextIO

__all__ = [
    "Output",
    "main",
    "run",
    "socket_path",
    "success_status",
]

REQUEST_ID = 1  # one request per run


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


# --------------------------------------------------------------------------- entry


def run(
    argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Parse ``argv``, run one command against the daemon, return the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        values = parse(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse has printed help or the usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(values["json"], stdout, stderr, values["raw"])
    if values["command"] == COMPLETION.name:
        return print_completion(values["shell"], out)
    spec = COMMANDS[values["command"]]
    args = wire_args(spec, values)
    try:
        protocol.validate_args(spec, args)  # the daemon checks too; fail before connecting
        line = protocol.encode(protocol.request(REQUEST_ID, spec.name, args))
    except (UsageError, ProtocolError) as exc:  # ProtocolError: a request over MAX_LINE
        return out.client_error(ErrorCode.USAGE, exc.message)
    path = socket_path(values["socket"])
    if values.get("watch"):
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
                    if spec is UPGRADE and status == EXIT_OK:
                        return wait_for_new_image(path, out)
                    return status
    except Unreachable as exc:
        return out.client_error(ErrorCode.UNREACHABLE, str(exc))
    except ProtocolError as exc:
        return out.client_error(ErrorCode.PROTOCOL, f"bad answer from the daemon: {exc.message}")
    raise AssertionError("exchange() ends with a final response or Unreachable")


def status_once(
    out: Output, spec: CommandSpec, args: dict[str, Any], path: str, line: bytes
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
    return status, out.human(spec, args, message)


def print_completion(shell: str, out: Output) -> int:
    """``supctl completion bash|zsh``: the script, from the command registry."""
    from . import completion  # only when asked: plain `supctl status` stays light

    try:
        out.stdout.write(completion.script(shell, completion.registered(), sys.executable))
    except UsageError as exc:
        return out.client_error(ErrorCode.USAGE, exc.message)
    return EXIT_OK


def success_status(spec: CommandSpec, args: dict[str, Any], result: Any, out: Output) -> int:
    """The exit status of an answered command whose answer itself says something
    (``status``: is everything up? ``plan``: is there something to do?), as its
    declaration judges it; the judgement's note goes to stderr."""
    if spec.judge is None:
        return EXIT_OK
    status, note = spec.judge(args, result)
    if note and not out.as_json:
        out.stderr.write(f"{PROG}: {note}\n")
    return status


UPGRADE_DEADLINE = 60.0


def wait_for_new_image(path: str, out: Output) -> int:
    """After ``upgrade`` was accepted, wait until the re-executed daemon answers.

    The new image's uptime restarts from zero, which tells it from the old one.
    """
    asked = time.monotonic()
    line = protocol.encode(protocol.request(REQUEST_ID, STATUS.name, {}))
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
                        return EXIT_OK
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
