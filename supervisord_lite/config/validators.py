"""The validators: how one setting's YAML value becomes a typed value, or an error.

A :class:`Validator` is a doc name for its type (``seconds > 0``, ``size``) and a
read function ``(Context, Value) -> value`` that raises ConfigError naming the
path and line. The :class:`Context` is what a value may be checked against
beyond itself: the addresses already claimed, the other apps' names, and the app
being read (its instances and which placeholders it can fill).
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import limits
from .values import (
    DEFAULT_INSTANCES,
    SOCKET_STDIN,
    ListenAddress,
    address_key,
    parse_address,
    parse_signal,
    parse_size,
    valid_host_name,
)
from .yaml_reader import Value

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_OCTAL_RE = re.compile(r"(?:0o)?[0-7]{1,4}")


@dataclass
class Context:
    """What the values of one config are checked against, beyond themselves.

    ``app`` holds the settings of the app being read so far: ``instances``,
    ``listen`` and ``release`` are read first, since they decide what ``listen``'s
    keys and the placeholders of the other settings may be.
    """

    # Every bound address -> who uses it, to reject the same address twice.
    claimed: dict[tuple[str, str, int], str] = field(default_factory=dict)
    app_names: tuple[str, ...] = ()
    # app -> its dependencies with the line of each, for cycle reports.
    dependencies: dict[str, list[tuple[str, Value]]] = field(default_factory=dict)
    app_name: str = ""
    app: dict[str, Any] = field(default_factory=dict)

    def claim(self, address: ListenAddress, who: str) -> str | None:
        """Record who uses ``address``; the earlier user when it is taken already."""
        key = address_key(address)
        if key in self.claimed:
            return self.claimed[key]
        self.claimed[key] = who
        return None


@dataclass(frozen=True)
class Validator:
    """How a setting's value is read: ``type`` names it in the docs."""

    type: str
    read: Callable[[Context, Value], Any]


def _plain(type_: str, read: Callable[[Value], Any]) -> Validator:
    return Validator(type_, lambda ctx, v: read(v))


# scalars


def text(v: Value, expected: str) -> str:
    """Any non-null scalar as it is written (``10`` and ``yes`` stay text)."""
    if not v.is_scalar or v.is_null:
        raise v.type_error(expected)
    return v.text


def read_string(v: Value, expected: str = "must be a string") -> str:
    if v.kind != "str":
        raise v.type_error(expected)
    return v.text


def nonempty_string(v: Value) -> str:
    value = read_string(v, "must be a non-empty string")
    if not value:
        raise v.error("must be a non-empty string")
    return value


def _boolean(v: Value) -> bool:
    if v.kind != "bool":
        raise v.type_error("must be true or false")
    return bool(v.construct())


def read_integer(v: Value, minimum: int) -> int:
    expected = f"must be an integer >= {minimum}"
    if v.kind != "int":
        raise v.type_error(expected)
    value = int(v.construct())
    if value < minimum:
        raise v.error(f"{expected}, not {value}")
    return value


def at_most(v: Value, value: int, maximum: int) -> int:
    message = limits.count_limit(value, maximum, v.path.rpartition(".")[2])
    if message:
        raise v.error(message)
    return value


def _number(v: Value, expected: str) -> float:
    if v.kind not in ("int", "float"):
        raise v.type_error(expected)
    try:
        value = float(v.construct())
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise v.error(f"{expected}, not {v.text}")
    return value


def read_seconds(v: Value, *, zero_ok: bool = False) -> float:
    """A duration: > 0, or >= 0 with ``zero_ok``."""
    if zero_ok:
        expected = "must be a number of seconds >= 0"
    else:
        expected = "must be a positive number of seconds"
    value = _number(v, expected)
    if value < 0 or (value == 0 and not zero_ok):
        raise v.error(f"{expected}, not {v.text}")
    return value


def _choice(v: Value, choices: tuple[str, ...]) -> str:
    expected = f"must be one of: {', '.join(choices)}"
    value = text(v, expected)
    if v.kind != "str" or value not in choices:
        raise v.type_error(expected)
    return value


def _octal(v: Value, what: str, example: str) -> int:
    """Permission bits: ``"0600"``/``"600"``/``"0o600"``, or unquoted ``0600``.

    Unquoted, YAML reads ``0600`` as the octal int 384, which is accepted; an
    unquoted ``600`` or ``22`` is decimal to YAML, almost surely not what was
    meant, so it is rejected rather than silently reinterpreted.
    """
    expected = f'must be an octal {what} like "{example}"'
    written = text(v, expected)
    kind = v.kind
    if kind == "int" and not re.fullmatch(r"0[0-7]*", written):
        raise v.error(f"{expected} (quote it, or write it with a leading 0)")
    if kind not in ("int", "str") or not _OCTAL_RE.fullmatch(written):
        raise v.type_error(expected)
    value = int(written.removeprefix("0o"), 8)
    if value > 0o777:
        raise v.error(f"must be an octal {what} from 000 to 777, not {written}")
    return value


def _size(v: Value) -> int:
    expected = "must be a size in bytes like 50MiB, 512MB or 1048576"
    if v.kind == "int":
        value = int(v.construct())
    else:
        try:
            value = parse_size(read_string(v, expected))
        except ValueError:
            raise v.type_error(expected) from None
    if value <= 0:
        raise v.error(f"must be more than 0 bytes, not {v.text}")
    return value


def read_signal(v: Value) -> signal.Signals:
    expected = 'must be a signal name like "TERM" or a signal number'
    kind = v.kind
    if kind not in ("str", "int"):
        raise v.type_error(expected)
    raw: str | int = v.text if kind == "str" else int(v.construct())
    try:
        return parse_signal(raw)
    except ValueError:
        what = "name" if kind == "str" else "number"
        raise v.error(f"unknown signal {what} {raw!r}") from None


def read_name(v: Value, what: str) -> str:
    """An app, instance or dependency name (YAML ints such as ``0`` count as text)."""
    if v.kind not in ("str", "int"):
        raise v.type_error(f"must be an {what} name")
    return check_name(v, v.text, what)


def check_name(v: Value, name: str, what: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise v.error(f"invalid {what} name {name!r} (use letters, digits, '_', '.' and '-')")
    return name


def _resolve(v: Value, path: str) -> str:
    base_dir = v.source.base_dir
    if base_dir is None or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def _account(v: Value, lookup: Callable[[str], object], what: str) -> str:
    name = nonempty_string(v)
    try:
        lookup(name)
    except (KeyError, ValueError):  # ValueError: an embedded NUL
        raise v.error(f"unknown {what} {name!r} on this machine") from None
    return name


def integer(minimum: int, maximum: int | None = None) -> Validator:
    def read(v: Value) -> int:
        value = read_integer(v, minimum)
        return value if maximum is None else at_most(v, value, maximum)

    return _plain(f"integer >= {minimum}", read)


def seconds(*, zero_ok: bool = False) -> Validator:
    return _plain(
        "seconds >= 0" if zero_ok else "seconds > 0", lambda v: read_seconds(v, zero_ok=zero_ok)
    )


def choice(choices: tuple[str, ...], convert: Callable[[str], Any] = str) -> Validator:
    return _plain(" | ".join(choices), lambda v: convert(_choice(v, choices)))


def octal(what: str, example: str) -> Validator:
    return _plain(f"octal {what}", lambda v: _octal(v, what, example))


def _socket_activation(v: Value) -> bool | str:
    if v.kind == "str" and v.text == SOCKET_STDIN:
        return SOCKET_STDIN
    if v.kind != "bool":
        raise v.type_error(f'must be true, false or "{SOCKET_STDIN}"')
    return bool(v.construct())


BOOL = _plain("bool", _boolean)
SOCKET_ACTIVATION = _plain(f'true | false | "{SOCKET_STDIN}"', _socket_activation)
SIZE = _plain("size (4096, 50MiB, 1.5G)", _size)
SIGNAL = _plain("signal (TERM, SIGTERM, 15)", read_signal)
DIRECTORY = _plain("path", lambda v: _resolve(v, nonempty_string(v)))
USER = _plain("user name", lambda v: _account(v, pwd.getpwnam, "user"))
GROUP = _plain("group name", lambda v: _account(v, grp.getgrnam, "group"))


# addresses


def _claimed_address(ctx: Context, v: Value) -> ListenAddress:
    """An address that nothing else in the config uses."""
    written = read_string(v, 'must be an address like "127.0.0.1:8000" or "unix:/path"')
    try:
        address = parse_address(written)
    except ValueError as exc:
        raise v.error(f"invalid address {written!r}: {exc}") from None
    taken = ctx.claim(address, f"{v.path} (line {v.line})")
    if taken is not None:
        raise v.error(f"address {written} is already used by {taken}")
    return address


ADDRESS = Validator("address (host:port, [v6]:port, unix:/path)", _claimed_address)


def _listen(ctx: Context, v: Value) -> dict[str, ListenAddress]:
    """One shared address (every instance maps to it), or one per instance."""
    instances: tuple[str, ...] = ctx.app.get("instances", DEFAULT_INSTANCES)
    if v.is_null:
        return {}
    if v.is_scalar:
        return dict.fromkeys(instances, _claimed_address(ctx, v))
    if not v.is_mapping:
        raise v.type_error("must be an address or a mapping of instance to address")
    entries = v.entries()
    for instance, entry in entries.items():
        if instance not in instances:
            known = ", ".join(instances)
            raise entry.error(f"unknown instance {instance!r} (instances: {known})")
    for instance in instances:
        if instance not in entries:
            raise v.error(f"no address for instance {instance!r}")
    return {i: _claimed_address(ctx, entries[i]) for i in instances}


LISTEN = Validator("address, or a mapping of instance to address", _listen)


def _host_names(v: Value) -> tuple[str, ...]:
    """A list of host names or IP addresses (no ports, no wildcards), lower-cased."""
    if v.is_null:
        return ()
    names: list[str] = []
    for item in v.items("must be a list of host names"):
        name = read_string(item, "must be a host name (a string)")
        if not valid_host_name(name):
            raise item.error(
                f"invalid host name {name!r} (a name like status.example.com or an IP"
                " address, without a port or a wildcard)"
            )
        names.append(name.lower())
    return tuple(names)


HOST_NAMES = _plain("list of host names", _host_names)


def _instances(v: Value) -> tuple[str, ...]:
    """A list of unique names, or a count N giving "0".."N-1"; null: the default."""
    if v.is_null:
        return DEFAULT_INSTANCES
    if v.kind == "int":
        count = at_most(v, read_integer(v, 1), limits.MAX_INSTANCES)
        return tuple(str(i) for i in range(count))
    items = v.items("must be a list of instance names or a number of instances")
    at_most(v, len(items), limits.MAX_INSTANCES)
    if not items:
        raise v.error("must not be empty")
    names: dict[str, Value] = {}
    for item in items:
        instance = read_name(item, "instance")
        if instance in names:
            first = names[instance].line
            raise item.error(f"duplicate instance {instance!r} (first on line {first})")
        names[instance] = item
    return tuple(names)


INSTANCES = _plain("list of names, or a count N", _instances)


def _depends_on(ctx: Context, v: Value) -> tuple[str, ...]:
    if v.is_null:
        return ()
    app = ctx.app_name
    deps: list[str] = []
    for item in v.items("must be a list of app names"):
        dep = read_name(item, "app")
        if dep == app:
            raise item.error("an app cannot depend on itself")
        if dep not in ctx.app_names:
            known = ", ".join(ctx.app_names)
            raise item.error(f"unknown app {dep!r} (apps: {known})")
        if dep in deps:
            raise item.error(f"{dep!r} is listed twice")
        deps.append(dep)
        ctx.dependencies.setdefault(app, []).append((dep, item))
    return tuple(deps)


DEPENDS_ON = Validator("list of app names", _depends_on)


def _env_file(v: Value) -> str:
    """A path, relative to the config file's directory; a leading ``-``: optional."""
    written = nonempty_string(v)
    dash = "-" if written.startswith("-") else ""
    path = written[len(dash) :]
    if not path:
        raise v.error("must be a path (a leading - makes the file optional)")
    return dash + _resolve(v, path)


ENV_FILE = _plain("path (-path: optional)", _env_file)


# the release pipeline (docs/pipeline.md)

#: What a notify hook can be told about (``notify.events``).
NOTIFY_EVENTS = (
    "deploy_started",
    "deploy_finished",
    "deploy_failed",
    "rolled_back",
    "crash",
    "backoff",
    "fatal",
    "health_failure",
    "memory_replacement",
)


def _events(v: Value) -> tuple[str, ...]:
    expected = "must be a list of event names"
    names = []
    for item in v.items(expected):
        names.append(_choice(item, NOTIFY_EVENTS))
    if not names:
        raise v.error("must name at least one event (or leave it out: every event)")
    return tuple(dict.fromkeys(names))


def _url(v: Value) -> str:
    url = nonempty_string(v)
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise v.error(f'must be a URL starting with "http://" or "https://", not {url!r}')
    return url


def _artifact(v: Value) -> str:
    """An artifact URL or absolute path with only ``{app}`` and ``{release}`` in it."""
    written = nonempty_string(v)
    fields = set(re.findall(r"\{([^{}]*)\}", written))
    unknown = fields - {"app", "release"}
    if unknown:
        raise v.error(
            f"unknown placeholder {{{sorted(unknown)[0]}}} (an artifact may use {{app}} "
            "and {release})"
        )
    if not (re.match(r"(https?|file)://", written) or os.path.isabs(written)):
        raise v.error(f"must be an http(s) or file:// URL or an absolute path, not {written!r}")
    return written


EVENTS = _plain("list of " + " | ".join(NOTIFY_EVENTS), _events)
URL = _plain("URL (http:// or https://)", _url)
ARTIFACT = _plain("URL or absolute path ({app}, {release} allowed)", _artifact)
