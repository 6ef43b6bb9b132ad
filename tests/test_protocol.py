"""The wire format and the command registry: pure functions, no sockets."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from supervisord_lite.control import protocol
from supervisord_lite.control.commands import COMMANDS
from supervisord_lite.control.commands.spec import ArgKind
from supervisord_lite.errors import ProtocolError, UsageError

# shared/ sits beside the checkout, here and in CI.
DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"


def test_encode_is_one_compact_line() -> None:
    """encode() gives compact UTF-8 JSON ending in exactly one newline."""
    line = protocol.encode({"id": 1, "message": "héllo\nworld"})
    assert line == '{"id":1,"message":"héllo\\nworld"}\n'.encode()
    assert line.count(b"\n") == 1


def test_round_trip() -> None:
    """decode() inverts encode() for every message constructor."""
    messages = [
        protocol.request(1, "start", {"target": "web:primary"}),
        protocol.progress_event(1, "STARTING", {"app": "web", "pid": 3}),
        protocol.log_event("x", "a line"),
        protocol.ok_response(1, {"lines": []}),
        protocol.error_response(None, {"code": "protocol", "message": "bad"}),
    ]
    for message in messages:
        assert protocol.decode(protocol.encode(message)) == message


def test_encode_refuses_oversized_messages() -> None:
    """A request over MAX_LINE is refused before it is sent; encode_unbounded is not."""
    big = {"id": 1, "pad": "x" * protocol.MAX_LINE}
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.encode(big)
    assert protocol.decode(protocol.encode_unbounded(big), limit=None) == big


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[1]", "expected a JSON object, got list"),
        (b'"text"', "expected a JSON object, got str"),
        (b"x" * (protocol.MAX_LINE + 2), "exceeds"),
    ],
)
def test_decode_rejects(line: bytes, fragment: str) -> None:
    """decode() raises ProtocolError for anything but a JSON object within the limit."""
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        protocol.decode(line)


def test_progress_extra_fields_cannot_override_framing() -> None:
    """Extra fields of a progress event never replace its id, event type or message."""
    event = protocol.progress_event(5, "ready", {"id": 9, "event": "log", "message": "x", "pid": 1})
    assert event == {"id": 5, "event": "progress", "message": "ready", "pid": 1}
    assert protocol.is_event(event)
    assert not protocol.is_event(protocol.ok_response(5, None))


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"command": "status"}, "'id'"),
        ({"id": True, "command": "status"}, "'id'"),
        ({"id": 1.5, "command": "status"}, "'id'"),
        ({"id": 1}, "'command'"),
        ({"id": 1, "command": "status", "args": "web"}, "'args'"),
    ],
)
def test_parse_request_rejects(message: dict[str, Any], fragment: str) -> None:
    """parse_request() checks id, command and args shapes."""
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        protocol.parse_request(message)


def test_parse_request_defaults_args() -> None:
    """A request without args has empty args."""
    assert protocol.parse_request({"id": "a", "command": "update"}) == ("a", "update", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("web", ("web", None)), ("web:primary", ("web", "primary")), ("web:0", ("web", "0"))],
)
def test_parse_target(text: str, expected: tuple[str, str | None]) -> None:
    """APP and APP:INSTANCE split into app and instance."""
    assert protocol.parse_target(text) == expected


@pytest.mark.parametrize("text", ["", ":primary", "web:", "web:a:b"])
def test_parse_target_rejects(text: str) -> None:
    """Empty parts and extra colons are usage errors."""
    with pytest.raises(UsageError, match="bad target"):
        protocol.parse_target(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HUP", signal.SIGHUP),
        ("SIGUSR2", signal.SIGUSR2),
        ("term", signal.SIGTERM),
        ("9", signal.SIGKILL),
        (15, signal.SIGTERM),
    ],
)
def test_parse_signal(value: str | int, expected: int) -> None:
    """Signal names with or without SIG, any case, and numbers are accepted."""
    assert protocol.parse_signal(value) == expected


@pytest.mark.parametrize("value", ["FOO", "SIG_DFL", "DFL", "", "0", 999, True])
def test_parse_signal_rejects(value: Any) -> None:
    """Unknown names, handler constants and impossible numbers are usage errors."""
    with pytest.raises(UsageError, match="bad signal"):
        protocol.parse_signal(value)


def test_bad_signal_message() -> None:
    """The daemon's message for a bad signal names it as the operator typed it."""
    with pytest.raises(UsageError) as caught:
        protocol.parse_signal("FOO")
    assert caught.value.message == "bad signal 'FOO'"


def test_validate_args_converts_and_fills_defaults() -> None:
    """Targets become tuples, signals numbers; absent optional args get defaults."""
    assert protocol.validate_args(COMMANDS["signal"], {"target": "web:a", "signal": "HUP"}) == {
        "target": ("web", "a"),
        "signal": signal.SIGHUP,
    }
    assert protocol.validate_args(COMMANDS["logs"], {"target": "web"}) == {
        "target": ("web", None),
        "follow": False,
        "lines": 50,
    }
    assert protocol.validate_args(COMMANDS["status"], {}) == {"app": None}
    assert protocol.validate_args(COMMANDS["reload"], {}) == {"apps": []}
    assert protocol.validate_args(COMMANDS["reload"], {"apps": ["a", "b"]}) == {"apps": ["a", "b"]}
    assert protocol.validate_args(
        COMMANDS["deploy"], {"app": "web", "release": "r1", "pause": True}
    ) == {"app": "web", "release": "r1", "pause": True, "artifact": None, "sha256": None}


def test_validate_args_defaults_are_not_shared() -> None:
    """A handler changing its list argument cannot change the registry's default."""
    protocol.validate_args(COMMANDS["reload"], {})["apps"].append("x")
    assert protocol.validate_args(COMMANDS["reload"], {}) == {"apps": []}


@pytest.mark.parametrize(
    ("command", "args", "fragment"),
    [
        ("start", {}, "missing argument APP[:INSTANCE]"),
        ("start", {"target": "web", "x": 1}, "unknown argument(s): x"),
        ("start", {"target": 5}, "bad target 5"),
        ("logs", {"target": "web", "lines": "3"}, "expected an integer"),
        ("logs", {"target": "web", "lines": True}, "expected an integer"),
        ("logs", {"target": "web", "lines": -2}, "must be at least 0"),
        ("logs", {"target": "web", "follow": "yes"}, "expected true or false"),
        ("reload", {"apps": "web"}, "expected a list"),
        ("reload", {"apps": ["web:primary"]}, "expected an app name"),
        ("deploy", {"app": "web", "release": ""}, "non-empty string"),
        ("status", {"app": "web:primary"}, "expected an app name"),
        ("signal", {"target": "web", "signal": "FOO"}, "bad signal 'FOO'"),
    ],
)
def test_validate_args_rejects(command: str, args: dict[str, Any], fragment: str) -> None:
    """Bad, missing or unknown arguments are usage errors that say what is wrong."""
    with pytest.raises(UsageError, match=re.escape(fragment)):
        protocol.validate_args(COMMANDS[command], args)


def test_registry_matches_the_design() -> None:
    """Every command of DESIGN.md's command table is registered, and nothing else."""
    if not DESIGN.exists():
        pytest.skip("DESIGN.md is not beside this checkout")
    section = DESIGN.read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)", section, re.MULTILINE))
    # commands the design names as "being added" below its table count as documented
    added = (
        section.split("Being added", 1)[1].split("\n\n", 1)[0] if "Being added" in section else ""
    )
    documented |= set(re.findall(r"`(\w+) \[", added))
    # commands beyond the table are recorded in docs/contract.md's "Where this extends the
    # contract"
    contract = (Path(__file__).resolve().parents[1] / "docs" / "contract.md").read_text()
    extends = contract.split("## Where this extends the contract", 1)[1].split("\n## ", 1)[0]
    extensions = set(re.findall(r"command `supctl (\w+)", extends))
    assert documented <= set(COMMANDS)
    assert set(COMMANDS) - documented == extensions


def test_registry_is_well_formed() -> None:
    """Names are unique, every command and argument has help, and done lines are sound."""
    for name, spec in COMMANDS.items():
        assert spec.name == name
        assert spec.help and "\n" not in spec.help
        names = [arg.name for arg in spec.args]
        assert len(names) == len(set(names)), name
        for arg in spec.args:
            assert arg.help
            assert all(flag.startswith("-") for flag in arg.flags)
            if arg.kind is ArgKind.FLAG:
                assert arg.flags and not arg.required and arg.default is False
            if not arg.required and not arg.flags:
                # Optional positionals must come last, or argparse cannot tell them apart.
                assert arg is [a for a in spec.args if not a.flags][-1]
        placeholders = set(re.findall(r"{(\w+)}", spec.done))
        assert placeholders <= set(names) | {"command"}, name
        assert spec.arg(names[0]) is spec.args[0] if names else True


def test_metavars() -> None:
    """Usage lines show targets as APP[:INSTANCE] and signals as SIG."""
    assert COMMANDS["start"].arg("target").metavar == "APP[:INSTANCE]"
    assert COMMANDS["signal"].arg("signal").metavar == "SIG"
    assert COMMANDS["deploy"].arg("release").metavar == "RELEASE"
    with pytest.raises(KeyError):
        COMMANDS["start"].arg("nope")


def test_undecodable_output_does_not_break_encoding() -> None:
    """A log line with lone surrogates (undecodable bytes) is sent with replacements."""
    line = protocol.encode(protocol.log_event(1, "bad \udcff byte"))
    assert protocol.decode(line)["line"] == "bad ? byte"
