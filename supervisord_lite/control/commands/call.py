"""What a command's handler gets from the control server: one :class:`Call`.

Daemon side: imported by :mod:`.dispatch` and the control server at run time, and by
each command's module for the type checker only (supctl never loads it). A handler
reaches the supervisor only through ``call.api`` (typed by the slice of the API its
command needs, declared in its module), reports progress through
:meth:`Call.progress`, and may stream an app's lines (:meth:`Call.send_line`) until
the client hangs up (``call.conn``, a :class:`Channel`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from ...log import get_logger
from .. import protocol
from .spec import CommandSpec

log = get_logger(__name__)

#: How an operation reports progress: ``(message, extra fields)``; extra fields such as
#: ``app``, ``instance``, ``state`` and ``pid`` travel in the event and supctl shows them.
Progress = Callable[[str, dict[str, Any]], None]


class Channel(Protocol):
    """The client's connection, as far as a handler may use it."""

    #: Set by a handler that owns the connection to its end (a log follow): no
    #: further requests are read on it.
    ended: bool

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message; silently dropped once the client has gone."""

    async def flush(self) -> bool:
        """Wait until the client has taken what was sent; False once it is gone."""

    async def wait_hangup(self) -> None:
        """Return when the client closes its end or sends anything more."""


API = TypeVar("API", covariant=True)


class Call(Generic[API]):
    """One request being served: the API, the command, its validated args, its channel."""

    __slots__ = ("api", "args", "conn", "raw_args", "request_id", "spec", "uid")

    def __init__(
        self,
        api: API,
        spec: CommandSpec,
        request_id: int | str,
        args: dict[str, Any],
        conn: Channel,
        raw_args: dict[str, Any],  # as the client sent them (for the history)
        uid: int | None = None,  # the caller's (SO_PEERCRED), for what it reports
    ) -> None:
        self.uid = uid
        self.api = api
        self.spec = spec
        self.request_id = request_id
        self.args = args
        self.conn = conn
        self.raw_args = raw_args

    def progress(self, message: str, extra: dict[str, Any]) -> None:
        """The :data:`Progress` callback handed to the API for this request."""
        if not self.spec.progress:
            # The declaration is what supctl's help promises; keep the two in step.
            log.warning("control_undeclared_progress", command=self.spec.name)
            return
        self.conn.send(protocol.progress_event(self.request_id, message, extra))

    def send_line(self, line: str) -> None:
        """Stream one line of an app's output to the client (``logs``)."""
        self.conn.send(protocol.log_event(self.request_id, line))


#: A command's daemon side: serves one call, returns the final response's ``result``
#: (or raises a :class:`errors.SupervisorError`).
Handler = Callable[[Call[API]], Awaitable[Any]]
