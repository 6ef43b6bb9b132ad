"""The control protocol: its wire format, and requests checked against the registry.

Owns everything both ends of the control socket must agree on, and nothing else:

* the framing: one JSON object per line, UTF-8, at most :data:`MAX_LINE` bytes;
* the message shapes: a request ``{"id", "command", "args"}``, any number of events
  ``{"id", "event": "progress"|"log", ...}`` and one final response
  ``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"code", "message", ...}}``;
* what a request may say: arguments its command's declaration allows
  (:func:`validate_args`, given the :class:`CommandSpec` that the registry,
  :mod:`commands`, looks up by name), which supctl checks before it sends and the
  daemon again when it receives.

Standard library only (plus :mod:`errors` and what a declaration is, never the
registry: each command's module sits above the wire format): ``supctl`` imports this
module and must start fast.
"""

from __future__ import annotations

import json

from ..errors import ProtocolError, UsageError
from .commands.spec import ArgKind, ArgSpec, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any

#: Longest line (request, event or response) either end accepts, newline excluded.
MAX_LINE = 1 << 20

#: Event types a daemon may send before the final response.
EVENT_PROGRESS = "progress"
EVENT_LOG = "log"

RequestId = int | str | None


# --------------------------------------------------------------------------- framing


def encode(message: dict[str, Any]) -> bytes:
    """One message as a wire line (compact JSON and a newline).

    Raises :class:`ProtocolError` when the line would exceed :data:`MAX_LINE`, so a
    sender finds out before the peer drops the connection, and :class:`TypeError`
    when the message holds something JSON cannot represent.
    """
    data = _dumps(message)
    if len(data) > MAX_LINE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {MAX_LINE}-byte line limit")
    return data + b"\n"


def encode_unbounded(message: dict[str, Any]) -> bytes:
    """Like :func:`encode` without the size limit: for daemon output such as a long log tail.

    Readers of daemon output (``supctl``) accept lines of any length; only requests,
    which the daemon reads, are bounded.
    """
    return _dumps(message) + b"\n"


def _dumps(message: dict[str, Any]) -> bytes:
    # "replace": an app's output may hold lone surrogates (undecodable bytes); they
    # become "?" rather than make the whole message unsendable.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")


def decode(line: bytes | str, *, limit: int | None = MAX_LINE) -> dict[str, Any]:
    """Parse one wire line into a JSON object; :class:`ProtocolError` when it is not one.

    ``limit=None`` accepts lines of any length (supctl reading daemon output).
    """
    # +1: the line may still carry its newline.
    if limit is not None and len(line) > limit + 1:
        raise ProtocolError(f"line exceeds the {limit}-byte limit")
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        # json.JSONDecodeError is a ValueError; bad UTF-8 in bytes raises UnicodeDecodeError.
        raise ProtocolError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a JSON object, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- messages


def request(request_id: int | str, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """A request message."""
    return {"id": request_id, "command": command, "args": args}


def progress_event(request_id: RequestId, message: str, extra: dict[str, Any]) -> dict[str, Any]:
    """A progress event; ``extra`` (app, instance, state, pid, ...) cannot override the framing."""
    return {**extra, "id": request_id, "event": EVENT_PROGRESS, "message": message}


def log_event(request_id: RequestId, line: str) -> dict[str, Any]:
    """One line of an app's output, streamed by ``logs``."""
    return {"id": request_id, "event": EVENT_LOG, "line": line}


def ok_response(request_id: RequestId, result: Any) -> dict[str, Any]:
    """The final response of a request that succeeded."""
    return {"id": request_id, "ok": True, "result": result}


def error_response(request_id: RequestId, error: dict[str, Any]) -> dict[str, Any]:
    """The final response of a request that failed; ``error`` is ``SupervisorError.to_wire()``."""
    return {"id": request_id, "ok": False, "error": error}


def is_event(message: dict[str, Any]) -> bool:
    """True for progress/log events, False for a final response."""
    return "event" in message


def parse_request(message: dict[str, Any]) -> tuple[int | str, str, dict[str, Any]]:
    """Check a decoded request's shape: its id, command name and raw args."""
    request_id = message.get("id")
    # bool is an int subclass; an id of true would be accepted by mistake.
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        raise ProtocolError("request needs an 'id' (integer or string)")
    command = message.get("command")
    if not isinstance(command, str):
        raise ProtocolError("request needs a 'command' (string)")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("'args' must be a JSON object")
    return request_id, command, args


# --------------------------------------------------------------------------- arguments


def parse_target(text: str) -> tuple[str, str | None]:
    """``"web:primary"`` -> ``("web", "primary")``; ``"web"`` -> ``("web", None)``."""
    app, sep, instance = text.partition(":")
    if not app or (sep and not instance) or ":" in instance:
        raise UsageError(f"bad target {text!r}: expected APP or APP:INSTANCE")
    return app, (instance if sep else None)


def parse_signal(value: str | int) -> int:
    """A signal name (``HUP``, ``SIGHUP``, ``hup``) or number -> its number."""
    import signal  # here: its enums cost supctl's every start-up more than they serve

    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return int(signal.Signals(value))
        except ValueError:
            raise UsageError(f"bad signal {value!r}") from None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_signal(int(text))
        name = text.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        # SIG_DFL/SIG_IGN live in the same namespace but are handlers, not signals.
        member = signal.Signals.__members__.get(name)
        if member is not None:
            return int(member)
    raise UsageError(f"bad signal {value!r}")


def signal_name(signum: int) -> str:
    """``1`` -> ``"SIGHUP"``."""
    import signal

    return signal.Signals(signum).name


def _check_app_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or ":" in value:
        raise UsageError(f"bad {what} {value!r}: expected an app name")
    return value


def _convert(spec: ArgSpec, value: Any) -> Any:
    """Check one argument's value and bring it to the form handlers use."""
    kind = spec.kind
    if kind is ArgKind.APP:
        return _check_app_name(value, spec.name)
    if kind is ArgKind.TARGET:
        if not isinstance(value, str):
            raise UsageError(f"bad {spec.name} {value!r}: expected APP or APP:INSTANCE")
        return parse_target(value)
    if kind is ArgKind.APPS:
        if not isinstance(value, list):
            raise UsageError(f"bad {spec.name}: expected a list of app names")
        return [_check_app_name(item, "app") for item in value]
    if kind is ArgKind.SIGNAL:
        return parse_signal(value)
    if kind is ArgKind.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"bad {spec.name} {value!r}: expected an integer")
        if spec.minimum is not None and value < spec.minimum:
            raise UsageError(f"bad {spec.name} {value}: must be at least {spec.minimum}")
        return value
    if kind is ArgKind.FLAG:
        if not isinstance(value, bool):
            raise UsageError(f"bad {spec.name} {value!r}: expected true or false")
        return value
    if not isinstance(value, str) or not value:
        raise UsageError(f"bad {spec.name} {value!r}: expected a non-empty string")
    return value


def validate_args(spec: CommandSpec, args: dict[str, Any]) -> dict[str, Any]:
    """Check a request's args against its command and fill in defaults.

    Returns every declared argument, converted: a target becomes ``(app, instance)``,
    a signal its number; absent optional arguments get their default. Unknown or
    missing arguments and bad values raise :class:`UsageError`.
    """
    wire = [a for a in spec.args if not a.local]
    unknown = sorted(set(args) - {a.name for a in wire})
    if unknown:
        raise UsageError(f"{spec.name}: unknown argument(s): {', '.join(unknown)}")
    converted: dict[str, Any] = {}
    for arg in wire:
        value = args.get(arg.name)
        if value is None:
            if arg.required:
                raise UsageError(f"{spec.name}: missing argument {arg.metavar}")
            # The APPS default is a tuple (the spec is frozen); handlers get a fresh list.
            default = arg.default
            converted[arg.name] = list(default) if isinstance(default, tuple) else default
            continue
        converted[arg.name] = _convert(arg, value)
    return converted


__all__ = [
    "EVENT_LOG",
    "EVENT_PROGRESS",
    "MAX_LINE",
    "decode",
    "encode",
    "encode_unbounded",
    "error_response",
    "is_event",
    "log_event",
    "ok_response",
    "parse_request",
    "parse_signal",
    "parse_target",
    "progress_event",
    "request",
    "signal_name",
    "validate_args",
]
