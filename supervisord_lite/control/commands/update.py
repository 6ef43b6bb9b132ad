"""``update``: re-read the config and apply the difference, all or nothing.

The declaration, the daemon's side (one call: the supervisor's update, or with
``--dry-run`` its plan) and how supctl shows the answer: the ``done`` line and what
was added, changed and removed, or with ``--dry-run`` the plan (:mod:`.plan`).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .plan import ALLOW_EMPTY, judge_plan, show_plan
from .spec import EXIT_FAILED, EXIT_OK, ArgKind, ArgSpec, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call, Progress
    from .plan import API as PlanAPI
    from .spec import Screen

    class API(PlanAPI, Protocol):
        """What ``update`` needs from the supervisor (``--dry-run``: ``plan``'s call)."""

        async def update(self, progress: Progress, allow_empty: bool = False) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- daemon


async def handle(call: Call[API]) -> Any:
    if call.args["dry_run"]:
        return await call.api.plan(call.args["allow_empty"])
    return await call.api.update(call.progress, call.args["allow_empty"])


# --------------------------------------------------------------------------- supctl


def _judge(args: dict[str, Any], result: Any) -> tuple[int, str | None]:
    return judge_plan(args, result) if args.get("dry_run") else (EXIT_OK, None)


def show(screen: Screen, args: dict[str, Any], result: Any) -> list[str]:
    if args.get("dry_run") and isinstance(result, dict):
        return show_plan(screen, args, result)
    return screen.outcome(UPDATE, args, result)


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
        ALLOW_EMPTY,
    ),
    done="config applied",
    exits={EXIT_FAILED: "failed and nothing was applied (with --dry-run: there are changes)"},
    judge=_judge,
    show=show,
    progress=True,
)
