"""The daemon's dispatch table: each registered command's handler, and the API they need.

Daemon side (:mod:`control` imports it; supctl never does). The table is the union of
the families' ``*_handlers.HANDLERS`` and is checked against the registry at import:
a command without a handler would otherwise only fail when someone ran it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from . import (
    COMMANDS,
    changes_handlers,
    daemon_handlers,
    deploys_handlers,
    lifecycle_handlers,
    views_handlers,
)
from .call import Handler


class SupervisorAPI(
    views_handlers.ViewsAPI,
    lifecycle_handlers.LifecycleAPI,
    changes_handlers.ChangesAPI,
    deploys_handlers.DeploysAPI,
    daemon_handlers.DaemonAPI,
    Protocol,
):
    """What the control socket needs from the supervisor: every family's slice, and
    the history of commands.

    Every method raises :class:`errors.SupervisorError` subclasses for failures an
    operator should see (``NoSuchApp``, ``OperationFailed`` with details such as
    ``output=[lines]``, ``Busy``, ``UsageError``); anything else is reported as an
    internal error. Async operations return when the operation is complete (ready,
    stopped, swapped) and return a JSON-able dict, shown to the operator by supctl
    (a ``message`` key, when present, replaces its default success line).
    """

    def record_command(
        self,
        command: str,
        args: dict[str, Any],
        peer: tuple[int, int, int] | None,  # (pid, uid, gid) from SO_PEERCRED
        error: dict[str, Any] | None,  # the wire error; None when it succeeded
        duration_s: float,
    ) -> None: ...


def _table() -> dict[str, Handler[SupervisorAPI]]:
    table: dict[str, Handler[SupervisorAPI]] = {}
    families: tuple[Mapping[str, Handler[SupervisorAPI]], ...] = (
        views_handlers.HANDLERS,
        lifecycle_handlers.HANDLERS,
        changes_handlers.HANDLERS,
        deploys_handlers.HANDLERS,
        daemon_handlers.HANDLERS,
    )
    for handlers in families:
        for name, handler in handlers.items():
            if name in table:
                raise RuntimeError(f"two handlers for command {name!r}")
            table[name] = handler
    if set(table) != set(COMMANDS):
        raise RuntimeError(f"control handlers out of step: {set(table) ^ set(COMMANDS)}")
    return table


#: One handler per command of :data:`commands.COMMANDS`, by name.
HANDLERS = _table()
