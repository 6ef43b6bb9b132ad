"""The command registry is the one declaration of each command; the rest is derived.

Every registered command is in supctl's help and completion, is read by supctl's
quick parser exactly as argparse reads it, and is dispatched by the control server
to its handler; an unknown command or argument is refused as clearly as ever. These
walk the registry, so a command added to it is checked without touching this file.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_control import DEADLINE, FakeAPI, RawClient, ServerThread, ask

from supervisord_lite.control import commands
from supervisord_lite.control.commands import COMMANDS, LOCAL_COMMANDS
from supervisord_lite.control.commands.call import Call
from supervisord_lite.control.commands.dispatch import HANDLERS
from supervisord_lite.control.commands.spec import ArgKind, ArgSpec, CommandSpec
from supervisord_lite.log import capture_logs
from supervisord_lite.supctl import args as supctl_args
from supervisord_lite.supctl import completion

REPO = Path(__file__).resolve().parents[1]
EVERY = [*COMMANDS.values(), *LOCAL_COMMANDS.values()]

#: A valid value of each kind of positional argument (FakeAPI knows the app "web").
SAMPLE = {
    ArgKind.APP: "web",
    ArgKind.TARGET: "web:primary",
    ArgKind.SIGNAL: "HUP",
    ArgKind.STRING: "r1",
    ArgKind.INT: "3",
}


def _sample(arg: ArgSpec) -> str:
    return arg.choices[0] if arg.choices else SAMPLE[arg.kind]


def _positionals(spec: CommandSpec) -> list[str]:
    """The command's required positionals, with valid values."""
    return [_sample(a) for a in spec.args if not a.flags and a.required]


def supctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisord_lite.supctl", *args],
        env={**os.environ, "COLUMNS": "1000"},  # no wrapping (textwrap breaks at hyphens)
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )


# --------------------------------------------------------------------------- derived


def test_every_declared_command_is_registered() -> None:
    """A CommandSpec declared in a family module but left out of its COMMANDS would be
    silently missing everywhere; each is registered exactly once."""
    declared: list[CommandSpec] = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        declared += [v for v in vars(module).values() if isinstance(v, CommandSpec)]
    assert {id(spec) for spec in declared} == {id(spec) for spec in EVERY}
    assert len({spec.name for spec in EVERY}) == len(EVERY)


def test_every_command_is_in_the_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """`supctl --help` lists every command with its help and the exit statuses, and each
    command's own --help shows its arguments, what it prints and its exit statuses."""
    main = supctl("--help")
    assert main.returncode == 0
    text = " ".join(main.stdout.split())  # argparse wraps lines
    for spec in EVERY:
        assert f"{spec.name} {' '.join(spec.help.split())}" in text, spec.name
    assert "Exit status: 0 ok, 1 failed, 2 usage or config error, 3 daemon unreachable" in text
    assert "status: 5 something that should run is not RUNNING and healthy." in text
    monkeypatch.setenv("COLUMNS", "1000")
    parser = supctl_args.build_parser()
    for spec in EVERY:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            parser.parse_args([spec.name, "--help"])
        shown = " ".join(out.getvalue().split())
        assert shown.startswith(f"usage: supctl {spec.name}"), spec.name
        for arg in spec.args:
            assert arg.metavar in shown or arg.flags, (spec.name, arg.name)
            assert all(flag in shown for flag in arg.flags), (spec.name, arg.name)
            assert " ".join(arg.help.split()) in shown, (spec.name, arg.name)
        for code, meaning in spec.exits.items():
            assert f"{code} {meaning}" in shown, (spec.name, code)
        assert ("Progress is printed" in shown) == spec.progress, spec.name


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_every_command_completes(shell: str) -> None:
    """The completion script offers every command, its options and a word class for
    each of its positionals (choices included)."""
    script = completion.script(shell, completion.registered(), "/x/python")
    names = [spec.name for spec in EVERY]
    assert f"command) cands=({' '.join(names)}) ;;" in script
    for spec in EVERY:
        options = " ".join(flag for arg in spec.args for flag in arg.flags)
        kinds = [a for a in spec.args if not a.flags]
        arm = f"\n        {spec.name}) options=({options}); kinds=("
        assert arm in script, spec.name
        listed = script.split(arm, 1)[1].split(")", 1)[0].split()
        assert len(listed) == len(kinds), spec.name
        for arg, word in zip(kinds, listed, strict=True):
            if arg.choices:
                assert f"{word}) cands=({' '.join(arg.choices)}) ;;" in script
            elif arg.kind in (ArgKind.APP, ArgKind.APPS, ArgKind.TARGET, ArgKind.SIGNAL):
                assert word == arg.kind.value


def test_every_command_is_dispatched(server: ServerThread, fake: FakeAPI) -> None:
    """The control server serves every registered command through its handler: a
    request with valid arguments reaches the supervisor API and is answered."""
    assert set(HANDLERS) == set(COMMANDS)
    server.open_gate()  # the fake's shutdown waits for it
    for spec in COMMANDS.values():
        before = len(fake.calls)
        args = {a.name: _sample(a) for a in spec.args if not a.flags and a.required}
        response = ask(server.path, spec.name, **args)
        assert response["ok"] is True, (spec.name, response)
        assert len(fake.calls) == before + 1, spec.name


def test_judged_exit_statuses_are_declared() -> None:
    """What a declaration's judge makes of an answer is one of its declared exit statuses."""
    answers: list[Any] = [
        None,
        {},
        {"unhealthy": ["web:backup BACKOFF"]},
        {"changes": True},
        {"changes": False},
        {"refused": True},
    ]
    judged = [spec for spec in EVERY if spec.judge is not None]
    assert {spec.name for spec in judged} >= {"status", "plan", "update"}
    for spec in judged:
        assert spec.judge is not None
        for args in ({}, {"dry_run": True}):
            for answer in answers:
                status, _ = spec.judge(args, answer)
                assert status in spec.exits, (spec.name, answer)


def test_progress_of_a_command_that_declares_none_is_dropped() -> None:
    """supctl's help says which commands print progress; an event from any other is a
    bug, logged and not sent."""
    sent: list[dict[str, Any]] = []

    class Conn:
        ended = False

        def send(self, message: dict[str, Any]) -> None:
            sent.append(message)

        async def flush(self) -> bool:
            return True

        async def wait_hangup(self) -> None:
            return None

    quiet, chatty = COMMANDS["signal"], COMMANDS["start"]
    assert not quiet.progress and chatty.progress
    with capture_logs() as logs:
        Call(None, quiet, 1, {}, Conn(), {}).progress("x", {})
        Call(None, chatty, 2, {}, Conn(), {}).progress("y", {})
    assert [m["id"] for m in sent] == [2]
    assert [e["event"] for e in logs] == ["control_undeclared_progress"]


# --------------------------------------------------------------------------- refusals


def test_unknown_command_and_argument_are_refused_as_before(server: ServerThread) -> None:
    """On the wire: an unknown command is a protocol error, an unknown or local-only
    argument a usage error, each naming what is wrong."""
    with RawClient(server.path) as client:
        client.send(5, "frobnicate")
        assert client.final()[1] == {
            "id": 5,
            "ok": False,
            "error": {"code": "protocol", "message": "unknown command 'frobnicate'"},
        }
        client.send(6, "start", target="web", force=True)
        assert client.final()[1] == {
            "id": 6,
            "ok": False,
            "error": {"code": "usage", "message": "start: unknown argument(s): force"},
        }
        client.send(7, "status", watch=True)
        assert client.final()[1]["error"] == {
            "code": "usage",
            "message": "status: unknown argument(s): watch",
        }


def test_supctl_refuses_unknown_commands_and_options() -> None:
    """On the command line: argparse's usage errors, exit 2, nothing on stdout."""
    unknown = supctl("frobnicate")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "supctl: error: argument COMMAND: invalid choice: 'frobnicate'" in unknown.stderr
    option = supctl("start", "web", "--force")
    assert option.returncode == 2 and option.stdout == ""
    assert "supctl: error: unrecognized arguments: --force" in option.stderr
    value = supctl("logs", "web", "-n", "many")
    assert value.returncode == 2
    assert "argument -n/--lines: invalid int value: 'many'" in value.stderr


# --------------------------------------------------------------------------- quick parser


def _command_lines(specs: list[CommandSpec]) -> Iterator[tuple[list[str], bool]]:
    """Command lines for every command: (argv, whether the quick parser must take it).

    Plain ones (positionals, then options, spelled out) must be taken; the rest --
    options before positionals, abbreviations, bad values, too many or too few
    positionals, help -- may be left to argparse, but must never be read differently.
    """
    before = [[], ["--json"], ["-s", "/a.sock", "--raw"]]
    after = [[], ["--json", "-s", "/b.sock"]]
    for spec in specs:
        required = _positionals(spec)
        optional = [a for a in spec.args if not a.flags and not a.required]
        extras: list[list[str]] = [[]] + ([[_sample_or_app(optional[0])]] if optional else [])
        if optional and optional[0].kind is ArgKind.APPS:
            extras.append(["web", "api"])
        options: list[list[str]] = [[]]
        for arg in spec.args:
            if arg.kind is ArgKind.FLAG:
                options += [[flag] for flag in arg.flags]
            else:
                options += [[flag, "5"] for flag in arg.flags]
        every_option = [token for option in options for token in option]
        options.append(every_option)
        for head in before:
            for tail in after:
                for extra in extras:
                    for option in options:
                        yield [*head, spec.name, *required, *extra, *option, *tail], True
                        if option:
                            yield [*head, spec.name, *option, *required, *extra, *tail], False
                        if option and extra:
                            yield [*head, spec.name, *required, *option, *extra, *tail], False
                yield [*head, spec.name, *required[:-1], *tail], not required
                yield [*head, spec.name, *required, "x", "y", *tail], False
        for bad in (["--js"], ["-h"], ["--"], ["--nope"], ["-"], [""], ["-s"], ["-s", "-x"]):
            yield [spec.name, *required, *bad], False
            yield [*bad, spec.name, *required], False
        for arg in spec.args:
            if arg.flags and arg.kind is not ArgKind.FLAG:
                for value in ("x", "-1", "", "07", " 5"):
                    yield [spec.name, *required, arg.flags[-1], value], False
    yield [], False
    yield ["nope"], False


def _sample_or_app(arg: ArgSpec) -> str:
    return "web" if arg.kind is ArgKind.APPS else _sample(arg)


#: Shapes no command has yet, where argparse reads an option between positionals its
#: own way (``frob web --pause api``: "unrecognized arguments: api").
UNUSUAL = [
    CommandSpec(
        "frob",
        "a required positional, then any number",
        (
            ArgSpec("app", ArgKind.APP, "one"),
            ArgSpec("apps", ArgKind.APPS, "more", required=False, default=()),
            ArgSpec("pause", ArgKind.FLAG, "p", False, ("--pause",), False),
            ArgSpec("count", ArgKind.INT, "n", False, ("-n",), 1),
        ),
    ),
    CommandSpec(
        "frob2",
        "a required positional, then an optional one",
        (
            ArgSpec("app", ArgKind.APP, "one"),
            ArgSpec("release", ArgKind.STRING, "two", required=False),
            ArgSpec("pause", ArgKind.FLAG, "p", False, ("--pause",), False),
        ),
    ),
]


def test_quick_parser_reads_every_command_line_as_argparse_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The quick parser takes the plain command lines of every command (and of shapes
    to come) and reads each line it takes exactly as argparse does."""
    monkeypatch.setattr(supctl_args, "COMMANDS", {**COMMANDS, **{s.name: s for s in UNUSUAL}})
    parser = supctl_args.build_parser()
    taken = plains = 0
    for argv, plain in _command_lines([*EVERY, *UNUSUAL]):
        plains += plain
        quick = supctl_args.quick_parse(argv)
        try:
            with (
                contextlib.redirect_stderr(io.StringIO()),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                full: dict[str, Any] | None = vars(parser.parse_args(argv))
        except SystemExit:
            full = None
        if quick is not None:
            taken += 1
            assert quick == full, argv
        assert quick is not None or not plain, argv
        if plain:
            assert full is not None, argv
    assert plains > 300 and taken > plains  # it also takes some lines it need not
