"""The daemon's own log, written by structlog: the only module that imports it.

JSON lines when stderr is not a terminal (journald, files, containers), structlog's
coloured console rendering on a terminal; ``log.format`` (``auto | console | json``)
and ``log.level`` come from the config. Each JSON line holds the call's fields, the
context bound to the logger (``instance``, ``app``), ``event``, ``level`` and
``timestamp`` (ISO 8601, UTC, ``Z``), and for ``log.exception`` the traceback once,
as the string ``exception`` (in the console rendering: the traceback under the line).

Levels are filtered by structlog's filtering bound loggers (a call below the level
costs a method call that returns), and each logger is built once, on its first use
after :func:`configure` (``cache_logger_on_first_use``). Until the daemon configures
the log from its config, the defaults below apply and nothing is cached, so the
config's level reaches every logger.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor

__all__ = ["Logger", "capture_logs", "configure", "get_logger"]

Logger = FilteringBoundLogger


class _StderrLogger(structlog.WriteLogger):
    """structlog's line writer on stderr that drops a line stderr cannot take (the
    terminal closed, the pipe gone): the daemon's work never fails for its log."""

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError):
            pass

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr(*_name: Any) -> _StderrLogger:
    # sys.stderr as it is when a logger is built (tests and the CLI may swap it)
    stream: TextIO = sys.stderr
    return _StderrLogger(stream)


def _processors(json_out: bool, colours: bool) -> list[Processor]:
    renderer: Processor
    chain: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_out:
        # the traceback as one string under "exception" (the key the lines always had)
        chain.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        # the console renderer formats exc_info itself: rendered once, under the line
        renderer = structlog.dev.ConsoleRenderer(colors=colours)
    return [*chain, renderer]


def configure(fmt: str = "auto", level: str = "info", *, final: bool = True) -> None:
    """Set up the daemon's log from its config (once, at start). ``final=False`` is
    for the import-time defaults: loggers are then not cached, so the config's
    settings reach them when the daemon calls this."""
    tty = sys.stderr.isatty()
    json_out = fmt == "json" or (fmt == "auto" and not tty)
    structlog.configure(
        processors=_processors(json_out, colours=tty),
        # the config checked the name (config.values.LOG_LEVELS)
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr,
        cache_logger_on_first_use=final,
    )


configure(final=False)


def get_logger(name: str) -> Logger:
    """A logger for one module (``log.info("event", key=value)``; ``log.bind(...)``
    gives one that adds those fields to every line)."""
    logger: Logger = structlog.get_logger(name)
    return logger


@contextlib.contextmanager
def capture_logs() -> Iterator[list[EventDict]]:
    """Collect the log calls of every level made inside the block (fields, ``event``,
    ``log_level``) instead of writing them: structlog.testing.capture_logs, for tests
    (of loggers not cached yet: before the daemon's :func:`configure`)."""
    level = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger("debug"))
    try:
        with structlog.testing.capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(wrapper_class=level)
