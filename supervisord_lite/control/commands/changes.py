"""Applying what changed: ``reload``, ``update`` and ``plan`` (declarations).

Their handlers are in :mod:`.changes_handlers`.
"""

from __future__ import annotations

from .spec import (
    EXIT_FAILED,
    EXIT_NO_SUCH_APP,
    EXIT_OK,
    EXIT_USAGE,
    NO_SUCH_APP,
    ArgKind,
    ArgSpec,
    CommandSpec,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ALLOW_EMPTY = ArgSpec(
    "allow_empty",
    ArgKind.FLAG,
    "apply (or plan) a config that stops every app, or has none",
    required=False,
    flags=("--allow-empty",),
    default=False,
)


def _judge_plan(args: dict[str, Any], result: Any) -> tuple[int, str | None]:
    """A plan's answer says whether there is anything to do (like ``diff``'s exit status)."""
    if not isinstance(result, dict):
        return EXIT_OK, None
    if result.get("refused"):
        return EXIT_USAGE, None
    return (EXIT_FAILED if result.get("changes") else EXIT_OK), None


def _judge_update(args: dict[str, Any], result: Any) -> tuple[int, str | None]:
    return _judge_plan(args, result) if args.get("dry_run") else (EXIT_OK, None)


RELOAD = CommandSpec(
    "reload",
    "zero-downtime hot swap of each instance, backup first; no APP means all apps",
    (ArgSpec("apps", ArgKind.APPS, "apps to reload (default: all)", False, default=()),),
    done="reloaded",
    exits={EXIT_NO_SUCH_APP: NO_SUCH_APP},
    progress=True,
)

UPDATE = CommandSpec(
    "update",
    "re-read the config and apply the difference (add, remove, hot-swap changed apps)",
    (
        ArgSpec(
            "dry_run",
            ArgKind.FLAG,
            "print the plan and change nothing (same as 'plan')",
            required=False,
            flags=("--dry-run",),
            default=False,
        ),
        _ALLOW_EMPTY,
    ),
    done="config applied",
    exits={EXIT_FAILED: "failed and nothing was applied (with --dry-run: there are changes)"},
    judge=_judge_update,
    progress=True,
)

PLAN = CommandSpec(
    "plan",
    "what 'update' would do, changing nothing",
    (_ALLOW_EMPTY,),
    done="plan",
    exits={
        EXIT_OK: "nothing to do",
        EXIT_FAILED: "there are changes",
        EXIT_USAGE: "usage or config error or the update would be refused",
    },
    judge=_judge_plan,
)

COMMANDS = (RELOAD, UPDATE, PLAN)
