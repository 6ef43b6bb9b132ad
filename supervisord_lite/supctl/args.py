"""``supctl``'s command line, derived from the command registry (:mod:`commands`).

Owns turning ``argv`` into the values of one command: supctl's own options (``-s``,
``--json``, ``--raw``, before or after the command), the command and its arguments.
The argparse parser -- usage, ``--help`` with each command's help, arguments and exit
statuses, the usage errors -- is built from the declarations; so is a quick parser
for plainly well-formed command lines, which spares the common ``supctl status`` the
import and construction of argparse (a quarter of its run). The quick parser accepts
a line only when argparse would read it the same way (tests/test_supctl.py checks it
on every command) and hands anything else -- help, abbreviations, mistakes -- to
argparse, so messages are argparse's as always.

Standard library only; argparse is imported only when it is needed.
"""

from __future__ import annotations

from ..control.commands import COMMANDS, LOCAL_COMMANDS
from ..control.commands.spec import EXITS, NO_SUCH_APP, ArgKind, ArgSpec, CommandSpec

TYPE_CHECKING = False  # typing is for mypy only: importing it costs supctl ~2 ms
if TYPE_CHECKING:
    import argparse
    from typing import Any

PROG = "supctl"

#: supctl's own options (completion.py keeps a copy, checked against ``--help``).
SOCKET_OPTIONS = ("-s", "--socket")
FLAG_OPTIONS = {"--json": "json", "--raw": "raw"}


def parse(argv: list[str]) -> dict[str, Any]:
    """The values ``argv`` gives: ``socket``, ``json``, ``raw``, ``command`` and one per
    argument of the command. Like argparse, prints help or a usage error and raises
    :class:`SystemExit` when that is what ``argv`` asks for."""
    values = quick_parse(argv)
    if values is None:
        values = vars(build_parser().parse_args(argv))
    return values


def quick_parse(argv: list[str]) -> dict[str, Any] | None:
    """``argv`` parsed without argparse, or None when it is not plainly well-formed.

    Plainly well-formed: options spelled out in full and followed by their value, the
    command's positionals before any option that follows the command, nothing that
    starts with ``-`` but a known option, and the right number of positionals.
    """
    values: dict[str, Any] = {"socket": None, "json": False, "raw": False}
    spec: CommandSpec | None = None
    options: dict[str, ArgSpec] = {}
    positionals: list[str] = []
    option_seen = False  # after the command: argparse reads later positionals its own way
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        arg = options.get(token)
        if token in SOCKET_OPTIONS or (arg is not None and arg.kind is not ArgKind.FLAG):
            if i == len(argv) or argv[i].startswith("-"):
                return None
            value = argv[i]
            i += 1
            if arg is None:
                values["socket"] = value
            elif (converted := _value(arg, value)) is None:
                return None
            else:
                values[arg.name] = converted
        elif token in FLAG_OPTIONS:
            values[FLAG_OPTIONS[token]] = True
        elif arg is not None:
            values[arg.name] = True
        elif spec is None:
            spec = COMMANDS.get(token) or LOCAL_COMMANDS.get(token)
            if spec is None:
                return None
            values["command"] = spec.name
            options = {flag: each for each in spec.args for flag in each.flags}
            values.update((each.name, _absent(each)) for each in spec.args)
            continue
        elif token.startswith("-") or option_seen:
            return None
        else:
            positionals.append(token)
            continue
        option_seen = spec is not None
    if spec is None or not _place(spec, positionals, values):
        return None
    return values


def _value(arg: ArgSpec, text: str) -> Any:
    """A value as argparse's ``type`` makes it (None when it would refuse it)."""
    if arg.kind is not ArgKind.INT:
        return text
    try:
        return int(text)
    except ValueError:
        return None


def _absent(arg: ArgSpec) -> Any:
    """What argparse sets for an argument the command line does not give."""
    if arg.kind is ArgKind.FLAG:
        return False
    return [] if arg.kind is ArgKind.APPS else None


def _place(spec: CommandSpec, positionals: list[str], values: dict[str, Any]) -> bool:
    """Give the positionals to the command's positional arguments, as argparse does
    when they come in one run (optional ones are last: tests/test_protocol.py)."""
    rest = list(positionals)
    for arg in spec.args:
        if arg.flags:
            continue
        if arg.kind is ArgKind.APPS:
            values[arg.name], rest = rest, []
        elif rest:
            if (value := _value(arg, rest.pop(0))) is None:
                return False
            values[arg.name] = value
        elif arg.required:
            return False
    return not rest


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per registered command."""
    import argparse  # here: the quick parser serves most runs without it

    specs = (*COMMANDS.values(), *LOCAL_COMMANDS.values())
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Control a running supervisord-lite daemon.",
        epilog=exit_summary(specs),
    )
    _add_global_options(parser, suppress=False)
    # The same options after the command (supctl status --json); SUPPRESS keeps a
    # subcommand from overwriting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in specs:
        sub = commands.add_parser(
            spec.name,
            help=spec.help,
            description=description(spec),
            epilog="Exit status: " + _exits(spec.exits.items()) + ".",
            parents=[common],
        )
        for arg in spec.args:
            _add_argument(sub, arg)
    return parser


def description(spec: CommandSpec) -> str:
    """A command's ``--help`` text: its help, and what it prints while it works."""
    text = spec.help[0].upper() + spec.help[1:] + "."
    if spec.progress:
        text += " Progress is printed on stderr as it happens (--json: progress events)."
    if spec.streams is not None:
        flag = spec.arg(spec.streams).flags[-1]
        text += f" With {flag} it goes on until interrupted."
    return text


def exit_summary(specs: tuple[CommandSpec, ...]) -> str:
    """The exit statuses every command shares, then what some mean for one command."""
    shared = dict(EXITS)
    particular: list[str] = []
    for spec in specs:
        own = []
        for code, meaning in spec.exits.items():
            if meaning == NO_SUCH_APP:
                shared[code] = meaning
            elif EXITS.get(code) != meaning:
                own.append((code, meaning))
        if own:
            particular.append(f"{spec.name}: {_exits(own)}.")
    return " ".join([f"Exit status: {_exits(shared.items())}.", *particular])


def _exits(items: Any) -> str:
    return ", ".join(f"{code} {meaning}" for code, meaning in sorted(items))


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    import argparse

    parser.add_argument(
        *SOCKET_OPTIONS,
        metavar="SOCKET",
        default=argparse.SUPPRESS if suppress else None,
        help="the daemon's control socket (default: $SUPCTL_SOCKET, else the state dir's)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="machine output: JSON lines (progress events, then the final response)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the apps' text as it is, control characters included (by default "
        "they are escaped, as \\x1b, on a terminal)",
    )


def _add_argument(parser: argparse.ArgumentParser, arg: ArgSpec) -> None:
    """One declared argument as an argparse argument (values are checked later, once)."""
    kind = arg.kind
    if kind is ArgKind.FLAG:
        parser.add_argument(*arg.flags, dest=arg.name, action="store_true", help=arg.help)
        return
    value_type = int if kind is ArgKind.INT else str
    if arg.flags:
        parser.add_argument(
            *arg.flags, dest=arg.name, type=value_type, metavar=arg.metavar, help=arg.help
        )
    elif kind is ArgKind.APPS:
        parser.add_argument(arg.name, nargs="*", metavar=arg.metavar, help=arg.help)
    else:
        parser.add_argument(
            arg.name,
            nargs=None if arg.required else "?",
            type=value_type,
            metavar=arg.metavar,
            help=arg.help,
        )


def wire_args(spec: CommandSpec, values: dict[str, Any]) -> dict[str, Any]:
    """The request's args: what the operator gave; the daemon fills in defaults."""
    args: dict[str, Any] = {}
    for arg in spec.args:
        value = values.get(arg.name)
        if arg.local or value is None or (arg.kind is ArgKind.FLAG and not value):
            continue
        args[arg.name] = value
    return args
