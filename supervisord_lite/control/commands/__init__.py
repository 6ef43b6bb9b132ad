"""The command registry: every supctl command, one module each, declared once.

A command's module holds all of it (as circus's ``commands/`` does): its declaration
(a :class:`spec.CommandSpec`: arguments, help, exit statuses and how an answer picks
one, how supctl shows the answer), the slice of the supervisor it needs (``API``,
for the type checker) and its handler (``handle``, what the daemon does: usually one
call into the supervisor). Add a command by writing its module and naming it below
and in :mod:`.dispatch`: the wire check (:mod:`protocol`), supctl's parser, help,
completion and output, and the control server's dispatch all come from here, and
tests/test_commands.py fails when one of them misses a command.

Light at run time: supctl imports this package and every command module on each run,
so they import nothing but :mod:`.spec` and each other (a handler gets the
supervisor through its :class:`call.Call`; a printer gets supctl's output through
its :class:`spec.Screen`), and ``typing`` only for the type checker.
"""

from __future__ import annotations

from ...errors import ProtocolError
from . import (
    completion,
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
from .spec import CommandSpec

#: Every command the daemon answers, by name, in the order help lists them.
COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        # what is there
        status.STATUS,
        logs.LOGS,
        history.HISTORY,
        # starting and stopping
        start.START,
        stop.STOP,
        restart.RESTART,
        signal.SIGNAL,
        # applying what changed
        reload.RELOAD,
        update.UPDATE,
        plan.PLAN,
        # releases
        deploy.DEPLOY,
        promote.PROMOTE,
        rollback.ROLLBACK,
        # the daemon itself
        upgrade.UPGRADE,
        shutdown.SHUTDOWN,
    )
}

#: Commands supctl answers by itself, without asking the daemon (so not on the wire).
LOCAL_COMMANDS: dict[str, CommandSpec] = {completion.COMPLETION.name: completion.COMPLETION}


def lookup(command: str) -> CommandSpec:
    """The registered command of that name; :class:`ProtocolError` for any other."""
    spec = COMMANDS.get(command)
    if spec is None:
        raise ProtocolError(f"unknown command {command!r}")
    return spec


__all__ = ["COMMANDS", "LOCAL_COMMANDS", "CommandSpec", "lookup"]
