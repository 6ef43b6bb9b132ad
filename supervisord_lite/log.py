"""The daemon's own log: structured lines on stderr, stdlib only.

JSON lines when stderr is not a terminal (journald, files, containers), readable
coloured lines on a terminal; ``format`` and ``level`` come from the config. Each
JSON line holds the call's fields in their order, then ``event``, ``level`` and
``timestamp`` (ISO 8601, UTC, microseconds, ``Z``), then ``exception`` (the
traceback) for ``log.exception``: the format structlog wrote before, without its
import cost (about 11 MiB of RSS for a dozen call sites).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_COLOURS = {"debug": "\x1b[34m", "info": "\x1b[32m", "warning": "\x1b[33m", "error": "\x1b[31m"}
_RESET, _DIM, _BRIGHT, _KEY, _VALUE = "\x1b[0m", "\x1b[2m", "\x1b[1m", "\x1b[36m", "\x1b[35m"


class _Config:
    threshold = _LEVELS["info"]
    json_out = True
    colours = False
    configured = False


_cfg = _Config()
_captures: list[list[dict[str, Any]]] = []  # capture_logs() blocks in force (tests)


@contextlib.contextmanager
def capture_logs() -> Iterator[list[dict[str, Any]]]:
    """Collect the log calls made inside the block (fields, ``event``, ``log_level``)
    instead of writing them: for tests, like structlog.testing.capture_logs."""
    entries: list[dict[str, Any]] = []
    _captures.append(entries)
    try:
        yield entries
    finally:
        _captures.remove(entries)


def configure(fmt: str = "auto", level: str = "info") -> None:
    """Set up the daemon's log (call once at start, again on update)."""
    tty = sys.stderr.isatty()
    _cfg.json_out = fmt == "json" or (fmt == "auto" and not tty)
    _cfg.colours = tty
    _cfg.threshold = _LEVELS.get(level, _LEVELS["info"])
    _cfg.configured = True


def _timestamp() -> str:
    now = time.time()
    secs = int(now)
    micros = int((now - secs) * 1e6)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"


def _console(fields: dict[str, Any]) -> str:
    c = _cfg.colours
    level = str(fields.pop("level"))
    stamp = fields.pop("timestamp")
    event = str(fields.pop("event"))
    exc = fields.pop("exception", None)
    pairs = " ".join(
        (f"{_KEY}{k}{_RESET}={_VALUE}{_text(v)}{_RESET}" if c else f"{k}={_text(v)}")
        for k, v in sorted(fields.items())
    )
    if c:
        line = (
            f"{_DIM}{stamp}{_RESET} [{_COLOURS.get(level, '')}{_BRIGHT}{level:<9}{_RESET}] "
            f"{_BRIGHT}{event:<30}{_RESET}"
        )
    else:
        line = f"{stamp} [{level:<9}] {event:<30}"
    if pairs:
        line += " " + pairs
    return line + ("\n" + exc if exc else "")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


class Logger:
    """``log.info("event", key=value)``; positional args are %-formatted into the event."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name  # not written (structlog did not write it either)

    def _emit(self, level: str, event: Any, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        if not _cfg.configured:
            configure()
        text = str(event) % args if args else event
        if _captures:
            _captures[-1].append({**fields, "event": text, "log_level": level})
            return
        if _LEVELS[level] < _cfg.threshold:
            return
        exc = fields.pop("exc_info", None)
        fields["event"] = text
        fields["level"] = level
        fields["timestamp"] = _timestamp()
        if exc:
            import traceback  # only for log.exception: not worth its RSS at start

        if isinstance(exc, BaseException):
            fields["exception"] = "".join(traceback.format_exception(exc)).rstrip("\n")
        elif exc and sys.exc_info()[0] is not None:
            fields["exception"] = traceback.format_exc().rstrip("\n")
        try:
            line = json.dumps(fields, default=repr) if _cfg.json_out else _console(fields)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr gone (closed terminal, full pipe): drop it
            pass

    def debug(self, event: Any, *args: Any, **fields: Any) -> None:
        self._emit("debug", event, args, fields)

    def info(self, event: Any, *args: Any, **fields: Any) -> None:
        self._emit("info", event, args, fields)

    def warning(self, event: Any, *args: Any, **fields: Any) -> None:
        self._emit("warning", event, args, fields)

    def error(self, event: Any, *args: Any, **fields: Any) -> None:
        self._emit("error", event, args, fields)

    def exception(self, event: Any, *args: Any, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._emit("error", event, args, fields)


def get_logger(name: str) -> Logger:
    """A logger for one module (``log.info("event", key=value)``)."""
    return Logger(name)
