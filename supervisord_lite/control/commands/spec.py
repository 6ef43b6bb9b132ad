"""What a control command is: the declaration types every command module fills in.

A command is one :class:`CommandSpec`: its name, one-line help, its arguments (each an
:class:`ArgSpec`: kind, flags, default, bounds, choices), the exit statuses it can give
and how an answer decides between them, whether it sends progress events or streams
until the client hangs up, the line supctl prints when it succeeds, or the printer
that shows its answer instead (given a :class:`Screen`). Everything else is derived
from these: supctl's parser, help and completion and the exit status it returns; the
daemon's check of each request and its dispatch to the command's handler (``handle``,
in the command's own module beside its declaration).

Plain classes and the standard library only: supctl imports every declaration on
each run, and dataclasses or ``typing`` would cost a tenth of its start-up.
"""

from __future__ import annotations

from enum import StrEnum

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    #: ``judge(args as sent, result) -> (exit status, line for stderr or None)``.
    Judge = Callable[[dict[str, Any], Any], tuple[int, str | None]]

    class Screen(Protocol):
        """What a command's printer gets from supctl (:class:`supctl.output.Output`):
        the shared ways to show text, so that a command module imports nothing of the
        client, as its handler imports nothing of the daemon."""

        def text(self, text: str) -> str:
            """App-controlled text as stdout may show it (made inert on a terminal)."""

        def paint(self, text: str, colour: str | None) -> str:
            """``text`` in a colour of the palette, when stdout takes colour."""

        def state_colour(self, state: str) -> str | None:
            """The colour an instance state is shown in."""

        def table(self, header: tuple[str, ...], rows: list[list[Cell]]) -> list[str]:
            """Aligned columns (numbers to the right), cells' text made inert, coloured."""

        def outcome(self, spec: CommandSpec, args: dict[str, Any], result: Any) -> list[str]:
            """The usual success lines: the result's message or the ``done`` line, then
            the result's scalar fields."""

    #: ``show(screen, args as sent, result) -> lines for stdout``: a successful answer
    #: as a person reads it (``--json`` prints the answer itself).
    Show = Callable[[Screen, dict[str, Any], Any], list[str]]

# supctl's exit statuses (DESIGN.md "Exit status"; docs/contract.md "Exit status of supctl").
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NO_SUCH_APP = 4
EXIT_NOT_RUNNING = 5  # status: something that should run is not RUNNING, or is unhealthy
EXIT_INTERRUPTED = 130  # Ctrl-C (ends logs -f)

#: One cell of a table supctl prints: its text and its colour (a name of supctl's
#: palette: green, yellow, red, dim; or None).
Cell = tuple[str, str | None]

#: What every command may exit with.
EXITS: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_FAILED: "failed",
    EXIT_USAGE: "usage or config error",
    EXIT_UNREACHABLE: "daemon unreachable",
}
#: The meaning of 4 shared by every command that names an app or instance.
NO_SUCH_APP = "no such app or instance"


class ArgKind(StrEnum):
    """How an argument is written on the command line and checked by the daemon."""

    APP = "app"  # an app name
    TARGET = "target"  # APP or APP:INSTANCE
    APPS = "apps"  # zero or more app names
    SIGNAL = "signal"  # a signal name (HUP, SIGHUP) or number
    INT = "int"
    FLAG = "flag"  # a boolean option
    STRING = "string"


_METAVARS = {
    ArgKind.APP: "APP",
    ArgKind.TARGET: "APP[:INSTANCE]",
    ArgKind.APPS: "APP",
    ArgKind.SIGNAL: "SIG",
    ArgKind.INT: "N",
}


class ArgSpec:
    """One argument of a command.

    ``flags`` empty means positional; otherwise an option such as ``("-n", "--lines")``.
    ``default`` is what the daemon assumes when the argument is absent; ``choices``,
    when given, are the only values a STRING argument takes (and what completion offers).
    """

    __slots__ = (
        "choices",
        "default",
        "flags",
        "help",
        "kind",
        "local",
        "minimum",
        "name",
        "required",
    )

    def __init__(
        self,
        name: str,
        kind: ArgKind,
        help: str,
        required: bool = True,
        flags: tuple[str, ...] = (),
        default: Any = None,
        minimum: int | None = None,  # INT only
        # Acted on by supctl itself (status --watch): never sent, and the daemon refuses it.
        local: bool = False,
        choices: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.required = required
        self.flags = flags
        self.default = default
        self.minimum = minimum
        self.local = local
        self.choices = choices

    def __repr__(self) -> str:
        return f"ArgSpec({self.name!r}, {self.kind!r})"

    @property
    def metavar(self) -> str:
        """How the argument is shown in usage lines."""
        return _METAVARS.get(self.kind, self.name.upper())


class CommandSpec:
    """One supctl command, declared once.

    ``done`` is formatted with the command's arguments (``{target}``, ``{app}``) when
    the daemon's result carries no ``message`` of its own. ``exits`` names the exit
    statuses this command gives beyond :data:`EXITS` (4 for an unknown app, what an
    answer can mean); ``judge`` turns a successful answer into one of them. ``show``
    prints a successful answer (None: :meth:`Screen.outcome`, the ``done`` line).
    ``progress``: the daemon sends progress events while it works; ``streams``: the
    FLAG argument with which the command streams until the client hangs up
    (``logs -f``); ``read_only``: it changes nothing, so it is not in the history.
    """

    __slots__ = (
        "args",
        "done",
        "exits",
        "help",
        "judge",
        "name",
        "progress",
        "read_only",
        "show",
        "streams",
    )

    def __init__(
        self,
        name: str,
        help: str,
        args: tuple[ArgSpec, ...] = (),
        done: str = "{command}: done",
        *,
        exits: dict[int, str] | None = None,
        judge: Judge | None = None,
        show: Show | None = None,
        progress: bool = False,
        streams: str | None = None,
        read_only: bool = False,
    ) -> None:
        self.name = name
        self.help = help
        self.args = args
        self.done = done
        self.exits: dict[int, str] = {**EXITS, **(exits or {})}
        self.judge = judge
        self.show = show
        self.progress = progress
        self.streams = streams
        self.read_only = read_only

    def __repr__(self) -> str:
        return f"CommandSpec({self.name!r})"

    def arg(self, name: str) -> ArgSpec:
        for spec in self.args:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def streaming(self, args: dict[str, Any]) -> bool:
        """Whether a request with these (validated) args streams until the client hangs up."""
        return self.streams is not None and bool(args.get(self.streams))


#: The argument most commands act on.
TARGET = ArgSpec("target", ArgKind.TARGET, "the app, or one instance of it (web:primary)")
APP = ArgSpec("app", ArgKind.APP, "the app")
