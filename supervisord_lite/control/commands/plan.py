"""``plan``: what ``update`` would do, changing nothing; exit 1 when there is something.

The declaration, the daemon's side (one call: the supervisor's plan of the config on
disk against the running one) and how supctl shows it (the plan's own text lines).
``update --dry-run`` is this command under another name (:mod:`.update`).
supctl imports this module on every run: nothing but the declarations at run time.
"""

from __future__ import annotations

from .spec import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ArgKind, ArgSpec, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .call import Call
    from .spec import Screen

    class API(Protocol):
        """What ``plan`` needs from the supervisor."""

        async def plan(self, allow_empty: bool = False) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- daemon


async def handle(call: Call[API]) -> Any:
    return await call.api.plan(call.args["allow_empty"])


# --------------------------------------------------------------------------- supctl


def judge_plan(args: dict[str, Any], result: Any) -> tuple[int, str | None]:
    """A plan's answer says whether there is anything to do (like ``diff``'s exit status)."""
    if not isinstance(result, dict):
        return EXIT_OK, None
    if result.get("refused"):
        return EXIT_USAGE, None
    return (EXIT_FAILED if result.get("changes") else EXIT_OK), None


def show_plan(screen: Screen, args: dict[str, Any], result: Any) -> list[str]:
    """A plan is shown as the text the daemon wrote for it."""
    if not isinstance(result, dict):
        return screen.outcome(PLAN, args, result)
    return [str(line) for line in result.get("text") or []]


#: Also ``update``'s: a config that leaves no app running is applied only when asked.
ALLOW_EMPTY = ArgSpec(
    "allow_empty",
    ArgKind.FLAG,
    "apply (or plan) a config that stops every app, or has none",
    required=False,
    flags=("--allow-empty",),
    default=False,
)

PLAN = CommandSpec(
    "plan",
    "what 'update' would do, changing nothing",
    (ALLOW_EMPTY,),
    done="plan",
    exits={
        EXIT_OK: "nothing to do",
        EXIT_FAILED: "there are changes",
        EXIT_USAGE: "usage or config error or the update would be refused",
    },
    judge=judge_plan,
    show=show_plan,
)
