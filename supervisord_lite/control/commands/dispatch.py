"""The daemon's dispatch table: each registered command's handler, and the API they need.

Daemon side (:mod:`control` imports it; supctl never does). The table pairs each
command's declaration with the ``handle`` of its module and is checked against the
registry at import: a command without a handler would otherwise only fail when
someone ran it. :class:`SupervisorAPI` is every command's ``API`` slice together,
for the type checker (the slices exist only for it, so supctl never imports
``typing``); the supervisor satisfies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from . import (
    COMMANDS,
    deploy,
    history,
    logs,
    plan,
    promote,
    reload,
    restart,
    rollback,
    shutdown,
    signal,
    start,
    status,
    stop,
    update,
    upgrade,
)
from .call import Handler
from .spec import CommandSpec

if TYPE_CHECKING:

    class SupervisorAPI(
        status.API,
        logs.API,
        history.API,
        start.API,
        stop.API,
        restart.API,
        signal.API,
        reload.API,
        update.API,
        plan.API,
        deploy.API,
        promote.API,
        rollback.API,
        upgrade.API,
        shutdown.API,
        Protocol,
    ):
        """What the control socket needs from the supervisor: every command's slice,
        and the history of commands.

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


def _table(
    pairs: tuple[tuple[CommandSpec, Handler[SupervisorAPI]], ...],
) -> dict[str, Handler[SupervisorAPI]]:
    table: dict[str, Handler[SupervisorAPI]] = {}
    for spec, handler in pairs:
        if spec.name in table:
            raise RuntimeError(f"two handlers for command {spec.name!r}")
        table[spec.name] = handler
    if set(table) != set(COMMANDS):
        raise RuntimeError(f"control handlers out of step: {set(table) ^ set(COMMANDS)}")
    return table


#: One handler per command of :data:`commands.COMMANDS`, by name.
HANDLERS = _table(
    (
        (status.STATUS, status.handle),
        (logs.LOGS, logs.handle),
        (history.HISTORY, history.handle),
        (start.START, start.handle),
        (stop.STOP, stop.handle),
        (restart.RESTART, restart.handle),
        (signal.SIGNAL, signal.handle),
        (reload.RELOAD, reload.handle),
        (update.UPDATE, update.handle),
        (plan.PLAN, plan.handle),
        (deploy.DEPLOY, deploy.handle),
        (promote.PROMOTE, promote.handle),
        (rollback.ROLLBACK, rollback.handle),
        (upgrade.UPGRADE, upgrade.handle),
        (shutdown.SHUTDOWN, shutdown.handle),
    )
)
