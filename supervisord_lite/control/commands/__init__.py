"""The command registry: every supctl command, declared once, as plain data.

Each module of this package declares a small family of commands (:mod:`.spec` says
what a declaration holds) and each family's handlers sit beside it in a
``*_handlers`` module, which only the daemon imports (through :mod:`.dispatch`).
Add a command by declaring it in a family's ``COMMANDS`` and giving it a handler:
the wire check (:mod:`protocol`), supctl's parser, help and completion and the
control server's dispatch all come from here, and tests/test_commands.py fails when
one of them misses a command.

Standard library only: supctl imports this package on every run.
"""

from __future__ import annotations

from . import changes, daemon, deploys, lifecycle, local, views
from .spec import CommandSpec

#: Every command the daemon answers, by name, in the order help lists them.
COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for family in (views, lifecycle, changes, deploys, daemon)
    for spec in family.COMMANDS
}

#: Commands supctl answers by itself, without asking the daemon (so not on the wire).
LOCAL_COMMANDS: dict[str, CommandSpec] = {spec.name: spec for spec in local.COMMANDS}

__all__ = ["COMMANDS", "LOCAL_COMMANDS", "CommandSpec"]
