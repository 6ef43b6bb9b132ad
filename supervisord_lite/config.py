"""The configuration: typed, frozen settings, their defaults and docs, and validation.

This is the only module that imports yaml. Every setting is declared once, below,
with its default and its documentation (``setting(default, doc)``); the loader turns
a YAML file into these frozen dataclasses or raises :class:`ConfigError` naming the
file, the line and the key path (``apps.web.stop.timeout: must be a positive number
of seconds``).

General rules of the loader (see :func:`parse_config` for the per-setting ones):

- The YAML is composed into a node tree (never constructed into Python objects
  wholesale), so every value keeps the line it came from. Duplicate keys are errors;
  anchors, aliases and ``<<`` merge keys work (explicit keys override merged ones).
- Unknown keys are errors that list the valid keys. An app needs ``command``;
  everything else has the default declared on its dataclass field.
- A section or collection written as ``null`` (``stop:`` with nothing after it)
  means "the defaults", except ``health: null`` / ``release: null`` (none) and
  ``supervisor.http: null`` (HTTP API disabled, like ``http: {listen: null}``).
  A plain setting that is not nullable (``stop.timeout:``) rejects null.
- Relative paths (``state_dir``, ``logs.dir``, ``release.root`` and a ``cwd``
  without placeholders) are resolved against the config file's directory, unless
  the file name is a pseudo name such as ``<config>``; then they are kept as given.
"""

# ruff: noqa: RUF009
# (setting() is dataclasses.field with a doc attached, not a shared mutable default.)

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import math
import os
import pwd
import re
import shlex
import signal
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from . import config_limits
from .errors import ConfigError
from .paths import default_state_dir

PLACEHOLDERS = ("app", "instance", "host", "port", "release", "release_dir", "generation")
DEFAULT_INSTANCES: tuple[str, ...] = ("primary",)


def setting(default: Any, doc: str, *, factory: bool = False, derived: bool = False) -> Any:
    """Declare one setting: its default and its documentation, in one place.

    ``derived`` marks a field the loader computes from other keys (it is not a YAML
    key of its own), so that :func:`describe_settings` does not list it.
    """
    metadata = {"doc": doc, "derived": derived}
    if factory:
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


class RestartPolicy(StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ListenAddress:
    """One address the supervisor binds: ``host:port``, ``[v6]:port`` or ``unix:/path``.

    ``address`` is the text of the config; ``host`` is an IP literal without brackets
    (``localhost`` is stored as ``127.0.0.1``).
    """

    address: str
    host: str = ""
    port: int = 0
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class ControlSocketConfig:
    mode: int = setting(0o600, "Permission bits of supctl.sock (octal string in YAML).")
    group: str | None = setting(
        None, "Group whose members may use supctl (besides root and the daemon's user)."
    )


@dataclass(frozen=True)
class HttpConfig:
    listen: ListenAddress | None = setting(
        ListenAddress("127.0.0.1:9190", "127.0.0.1", 9190),
        "Address of the read-only HTTP API (/status, /healthz, /metrics); null disables it.",
    )


@dataclass(frozen=True)
class LogConfig:
    format: LogFormat = setting(LogFormat.AUTO, "auto: readable on a terminal, JSON otherwise.")
    level: str = setting("info", "debug | info | warning | error.")


@dataclass(frozen=True)
class SupervisorConfig:
    state_dir: str = setting(
        default_state_dir,
        "Directory of supctl.sock, notify.sock, the pidfile, state.json and releases/.",
        factory=True,
    )
    control_socket: ControlSocketConfig = setting(
        ControlSocketConfig, "The control socket's permissions.", factory=True
    )
    http: HttpConfig = setting(HttpConfig, "The HTTP API.", factory=True)
    log: LogConfig = setting(LogConfig, "The daemon's own log.", factory=True)
    shutdown_timeout: float = setting(
        60.0, "Seconds a graceful shutdown of all apps may take before processes are killed."
    )


@dataclass(frozen=True)
class CheckConfig:
    """One probe: exactly one of http, tcp, exec (placeholders allowed)."""

    http: str | None = setting(None, "URL that must answer 2xx, e.g. http://{host}:{port}/health.")
    tcp: str | None = setting(
        None, "host:port that must accept a connection (by this instance's processes)."
    )
    exec: tuple[str, ...] | None = setting(None, "Command that must exit 0.")


@dataclass(frozen=True)
class ReadyConfig(CheckConfig):
    """What "started" means for an instance; it gates start, reload and deploy.

    At most one of ``http``, ``tcp``, ``exec``, optionally with ``notify`` and/or
    ``delay``; every criterion that is set must hold, within ``timeout``.

    Default (decided): when the app's ``ready`` is absent or sets none of
    ``http``/``tcp``/``exec``/``delay`` and not ``notify: true``, the loader fills in

    - ``tcp: "{host}:{port}"`` when the app has a listen address (TCP addresses only),
      since a socket that the instance's own processes accept on is the best cheap
      evidence of a working server;
    - otherwise ``delay: 1.0``: ready once the process stayed up one second
      (supervisord's ``startsecs``), which at least catches a crash on boot.

    ``timeout`` still applies in both cases. The dataclass's own defaults are
    those of an app without a listen address.
    """

    notify: bool = setting(False, "Ready when the child sends READY=1 on NOTIFY_SOCKET.")
    delay: float | None = setting(None, "Ready once the process has stayed up this many seconds.")
    timeout: float = setting(60.0, "Seconds to become ready before the start counts as failed.")


DEFAULT_READY_DELAY = 1.0
DEFAULT_READY_TCP = "{host}:{port}"


def _default_ready() -> ReadyConfig:
    """What the loader fills in for an app without a listen address and without ``ready``."""
    return ReadyConfig(delay=DEFAULT_READY_DELAY)


@dataclass(frozen=True)
class HealthConfig(CheckConfig):
    interval: float = setting(5.0, "Seconds between liveness checks.")
    timeout: float = setting(2.0, "Seconds one check may take.")
    failures: int = setting(3, "Consecutive failed checks that make the instance be restarted.")


@dataclass(frozen=True)
class BackoffConfig:
    initial: float = setting(0.5, "Delay before the second consecutive restart; doubles each time.")
    max: float = setting(30.0, "Upper bound of the restart delay.")
    reset_after: float = setting(60.0, "Seconds of running that forgive earlier failures.")
    max_retries: int | None = setting(
        None, "Consecutive failed starts before FATAL; null retries forever."
    )


@dataclass(frozen=True)
class StopConfig:
    signal: signal.Signals = setting(signal.SIGTERM, "Signal sent to the process group to stop it.")
    timeout: float = setting(30.0, "Seconds to wait after the signal before SIGKILL of the group.")


@dataclass(frozen=True)
class ReloadConfig:
    """``swap`` (default): start a new generation beside the old one. Or a signal
    with a pidfile for apps that re-exec themselves (Unicorn, gunicorn master)."""

    signal: signal.Signals | None = setting(
        None, "Signal that makes the app re-exec itself; null: swap."
    )
    pidfile: str | None = setting(None, "Where the re-executed master writes its pid.")

    @property
    def is_swap(self) -> bool:
        return self.signal is None


@dataclass(frozen=True)
class LogsConfig:
    dir: str | None = setting(None, "Directory of APP.INSTANCE.log files; null: STATE_DIR/logs.")
    max_bytes: int = setting(50 * 1024 * 1024, "Size at which a log file is rotated.")
    backups: int = setting(5, "Rotated files kept (APP.INSTANCE.log.1 ...).")


@dataclass(frozen=True)
class ReleaseConfig:
    root: str = setting("", "Directory holding releases/NAME and the current symlink.")
    keep: int = setting(5, "Old release directories kept; older ones are pruned.")
    settle: float = setting(
        3.0,
        "Seconds a deploy's canary (the backup) must stay ready and healthy "
        "before the primary is swapped.",
    )


@dataclass(frozen=True)
class AppConfig:
    name: str
    command: tuple[str, ...] = setting(
        (), "The program and its arguments (list, or a string split like a shell would)."
    )
    cwd: str | None = setting(None, "Working directory (placeholders allowed).")
    env: dict[str, str] = setting(
        dict, "Extra environment variables (placeholders allowed).", factory=True
    )
    env_file: str | None = setting(
        None, "KEY=value file read at each spawn (systemd EnvironmentFile=; -path: optional)."
    )
    user: str | None = setting(None, "Run as this user (the daemon must be root).")
    group: str | None = setting(None, "Run with this group.")
    umask: int | None = setting(None, "umask of the child (octal string).")
    instances: tuple[str, ...] = setting(
        DEFAULT_INSTANCES, "Instance names; an integer N gives 0..N-1."
    )
    listen: dict[str, ListenAddress] = setting(
        dict,
        "Instance name to the address it accepts on "
        "(one shared address maps every instance to it).",
        factory=True,
    )
    listen_shared: bool = setting(
        False, "True when one address is shared by all instances.", derived=True
    )
    socket_activation: bool = setting(
        True, "Pass the bound sockets as LISTEN_FDS; false: the app binds {port} itself."
    )
    ready: ReadyConfig = setting(
        _default_ready, "What 'started' means; gates start, reload and deploy.", factory=True
    )
    health: HealthConfig | None = setting(None, "Liveness checks while running.")
    restart: RestartPolicy = setting(RestartPolicy.ALWAYS, "always | on-failure | never.")
    backoff: BackoffConfig = setting(
        BackoffConfig, "Restart delays of a crash-looping instance.", factory=True
    )
    stop: StopConfig = setting(StopConfig, "How an instance is stopped.", factory=True)
    reload: ReloadConfig = setting(ReloadConfig, "How a reload replaces an instance.", factory=True)
    watchdog: float | None = setting(None, "Seconds within which the child must send WATCHDOG=1.")
    max_memory: int | None = setting(None, "RSS in bytes above which the instance is replaced.")
    logs: LogsConfig = setting(LogsConfig, "Captured output of the app.", factory=True)
    depends_on: tuple[str, ...] = setting((), "Apps that must be ready before this one starts.")
    release: ReleaseConfig | None = setting(None, "Releases under root/releases/NAME.")
    autostart: bool = setting(True, "Start this app when the daemon starts (and on update).")

    def listen_for(self, instance: str) -> ListenAddress | None:
        return self.listen.get(instance)

    @property
    def needs_notify_socket(self) -> bool:
        return self.ready.notify or self.watchdog is not None


@dataclass(frozen=True)
class Config:
    supervisor: SupervisorConfig
    apps: dict[str, AppConfig]
    path: str | None = None
    # the YAML this config was read from: an upgraded or restarted daemon keeps running
    # what its predecessor ran, and `update` applies whatever the file says since
    text: str | None = field(default=None, repr=False, compare=False)

    def start_order(self) -> list[str]:
        """App names so that every app comes after the apps it depends on."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for dep in self.apps[name].depends_on:
                visit(dep)
            order.append(name)

        for name in self.apps:
            visit(name)
        return order


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``{placeholder}`` names; unknown names were rejected at load time."""
    return template.format_map(values)


# --- loading ---------------------------------------------------------------------

_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_OCTAL_RE = re.compile(r"(?:0o)?[0-7]{1,4}")
_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)")
_PORT_RE = re.compile(r"[0-9]{1,5}")
# K/M/G are binary, as in most Unix tools (ulimit, systemd's MemoryMax=).
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
}
# sun_path is 108 bytes on Linux, one of which is the terminating NUL.
_MAX_UNIX_PATH = 107
_DEFAULT_HTTP_LISTEN = HttpConfig().listen
# Values used to check the shape of a rendered tcp check template.
_SAMPLE_VALUES = {
    "app": "app",
    "instance": "primary",
    "host": "127.0.0.1",
    "port": "8000",
    "release": "r1",
    "release_dir": "/srv/app/releases/r1",
    "generation": "1",
}
Reader = Callable[["_Value"], Any]


@dataclass(frozen=True)
class _Value:
    """A YAML node with its key path and the 1-based line of the key that holds it.

    The key's line (not the value's) is what an operator looks for: a block mapping
    or list value starts on the line after its key. List items carry their own line.
    """

    node: yaml.Node
    path: str
    line: int

    def child(self, name: str, node: yaml.Node, line: int) -> _Value:
        return _Value(node, f"{self.path}.{name}" if self.path else name, line)

    @property
    def is_null(self) -> bool:
        return _kind(self.node) == "null"


@dataclass(frozen=True)
class _Scope:
    """What the placeholders of one app can be filled with."""

    listen: bool
    unix_listen: bool
    release: bool


def _kind(node: yaml.Node) -> str:
    """The short YAML type of a node: str, int, float, bool, null, map, seq or its tag."""
    if isinstance(node, yaml.MappingNode):
        return "map"
    if isinstance(node, yaml.SequenceNode):
        return "seq"
    return node.tag.removeprefix(_YAML_TAG)


def _describe(node: yaml.Node) -> str:
    """How an error message names what was found instead of what was expected."""
    kind = _kind(node)
    if kind == "map":
        return "a mapping"
    if kind == "seq":
        return "a list"
    text = str(node.value)
    if len(text) > 40:
        text = text[:37] + "..."
    names = {
        "null": "null",
        "bool": f"a bool ({text})",
        "int": f"an integer ({text})",
        "float": f"a number ({text})",
        "str": f"a string ({text!r})",
    }
    return names.get(kind, f"a value tagged {node.tag} ({text!r})")


def _is_pseudo_filename(filename: str) -> bool:
    """``<config>``, ``<stdin>``: text that does not come from a file on disk."""
    return filename.startswith("<") and filename.endswith(">")


def _escape_braces(text: str) -> str:
    """Make literal text safe to prepend to a template (``{`` renders as itself)."""
    return text.replace("{", "{{").replace("}", "}}")


def _template_fields(text: str) -> list[str]:
    """The placeholder names of a template; raises ValueError when it is malformed."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def parse_address(text: str) -> ListenAddress:
    """Parse ``host:port``, ``[v6]:port`` or ``unix:/abs/path``; ValueError says why not.

    The host must be an IP literal or ``localhost`` (stored as ``127.0.0.1``): the
    supervisor binds at start and at every ``update``, so a name that resolves
    differently over time, or not at all at boot, would be a trap.
    """
    if text.startswith("unix:"):
        return _parse_unix_address(text)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError('expected "host:port", "[v6]:port" or "unix:/path"')
    return ListenAddress(text, _parse_host(host), _parse_port(port_text))


def _parse_unix_address(text: str) -> ListenAddress:
    path = text.removeprefix("unix:")
    if not path.startswith("/"):
        raise ValueError("a unix socket path must be absolute (unix:/path)")
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ValueError(f"a unix socket path may have at most {_MAX_UNIX_PATH} bytes")
    return ListenAddress(text, path=path)


def _parse_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    bracketed = host.startswith("[") and host.endswith("]")
    literal = host[1:-1] if bracketed else host
    if ":" in host and not bracketed:
        # Without brackets the port cannot be told apart from the address.
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:8000")
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        raise ValueError(
            f"host {host!r} must be an IP address or 'localhost' (names are not resolved)"
        ) from None
    if bracketed and ip.version != 6:
        raise ValueError("brackets go around IPv6 addresses only, e.g. [::1]:8000")
    return literal


def _parse_port(text: str) -> int:
    port = int(text) if _PORT_RE.fullmatch(text) else 0
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, not {text!r}")
    return port


def _address_key(address: ListenAddress) -> tuple[str, str, int]:
    """Identity of a bound address: ``localhost:80`` and ``127.0.0.1:80`` are the same."""
    if address.path is not None:
        return ("unix", os.path.normpath(address.path), 0)
    return ("tcp", ipaddress.ip_address(address.host).compressed, address.port)


def parse_size(text: str) -> int:
    """Bytes of ``512MiB``, ``1.5G``, ``100KB`` or ``4096``; ValueError when malformed.

    KB/MB/GB are decimal; KiB/MiB/GiB and the short K/M/G are binary. Units are
    case-insensitive. Fractions are allowed and rounded down to whole bytes.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(text)
    return int(Fraction(match.group(1)) * _SIZE_UNITS[unit])


def parse_signal(value: str | int) -> signal.Signals:
    """``TERM``, ``SIGTERM``, ``term`` or a signal number; ValueError when unknown."""
    if isinstance(value, int):
        return signal.Signals(value)
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__:
        raise ValueError(value)
    return signal.Signals[name]


class _Reader:
    """Reads typed values out of a composed YAML tree; every error names path and line."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.base_dir = (
            None if _is_pseudo_filename(filename) else os.path.dirname(os.path.abspath(filename))
        )
        # Scalars are converted one at a time by PyYAML's own rules (octal 0600,
        # 1_000, yes/no), so the values are exactly what yaml.safe_load would give.
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, v: _Value, message: str) -> ConfigError:
        return ConfigError(message, file=self.filename, line=v.line, path=v.path or None)

    def type_error(self, v: _Value, expected: str) -> ConfigError:
        return self.error(v, f"{expected}, not {_describe(v.node)}")

    # collections

    def mapping(self, v: _Value, allowed: tuple[str, ...] | None = None) -> dict[str, _Value]:
        """The entries of a mapping (null: none), checking duplicates and unknown keys."""
        if v.is_null:
            return {}
        if not isinstance(v.node, yaml.MappingNode):
            keys = f" with keys {', '.join(allowed)}" if allowed else ""
            raise self.type_error(v, f"must be a mapping{keys}")
        return self._entries(v, v.node, allowed, frozenset())

    def _entries(
        self,
        v: _Value,
        node: yaml.MappingNode,
        allowed: tuple[str, ...] | None,
        visiting: frozenset[int],
    ) -> dict[str, _Value]:
        visiting = visiting | {id(node)}
        own: dict[str, _Value] = {}
        merged: dict[str, _Value] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                source = v.child("<<", value, key.start_mark.line + 1)
                for merged_node in self._merge_sources(source, visiting):
                    for name, entry in self._entries(v, merged_node, allowed, visiting).items():
                        merged.setdefault(name, entry)
                continue
            name, entry = self._entry(v, key, value, allowed)
            if name in own:
                raise self.error(entry, f"duplicate key (first given on line {own[name].line})")
            own[name] = entry
        # Explicit keys override merged ones, as in YAML's merge-key convention.
        return {**merged, **own}

    def _entry(
        self, v: _Value, key: yaml.Node, value: yaml.Node, allowed: tuple[str, ...] | None
    ) -> tuple[str, _Value]:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode) or _kind(key) == "null":
            raise self.error(_Value(key, v.path, line), "keys must be plain strings")
        # The key as written: `0: ...` under listen names instance "0", not int 0.
        name = str(key.value)
        entry = v.child(name, value, line)
        if allowed is not None and name not in allowed:
            raise self.error(entry, f"unknown key (expected one of: {', '.join(allowed)})")
        return name, entry

    def _merge_sources(self, v: _Value, visiting: frozenset[int]) -> list[yaml.MappingNode]:
        nodes = v.node.value if isinstance(v.node, yaml.SequenceNode) else [v.node]
        if not all(isinstance(node, yaml.MappingNode) for node in nodes):
            raise self.type_error(v, "must be a mapping or a list of mappings to merge")
        if any(id(node) in visiting for node in nodes):
            raise self.error(v, "a mapping cannot merge itself")
        return list(nodes)

    def sequence(self, v: _Value, expected: str) -> list[_Value]:
        """The items of a list, each with its own path (``a.b[0]``) and line."""
        if not isinstance(v.node, yaml.SequenceNode):
            raise self.type_error(v, expected)
        return [
            _Value(item, f"{v.path}[{i}]", item.start_mark.line + 1)
            for i, item in enumerate(v.node.value)
        ]

    def section(
        self, v: _Value, readers: Mapping[str, Reader]
    ) -> tuple[dict[str, Any], dict[str, _Value]]:
        """Read a mapping whose keys are exactly those of ``readers``, one reader each."""
        entries = self.mapping(v, tuple(readers))
        return {name: readers[name](entry) for name, entry in entries.items()}, entries

    def require(self, v: _Value, entries: Mapping[str, _Value], *names: str) -> None:
        for name in names:
            if name not in entries:
                raise self.error(v, f"missing required key {name!r}")

    # scalars

    def _construct(self, v: _Value) -> Any:
        try:
            return self._constructor.construct_object(v.node)
        except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
            # Only an explicit tag can get here (`!!int abc`): the resolver
            # gives implicit tags to well-formed scalars only.
            raise self.error(v, f"is not a valid {_kind(v.node)}: {v.node.value!r}") from exc

    def text(self, v: _Value, expected: str) -> str:
        """Any non-null scalar as it is written (``10`` and ``yes`` stay text)."""
        if not isinstance(v.node, yaml.ScalarNode) or v.is_null:
            raise self.type_error(v, expected)
        return str(v.node.value)

    def string(self, v: _Value, expected: str = "must be a string") -> str:
        if _kind(v.node) != "str":
            raise self.type_error(v, expected)
        return str(v.node.value)

    def nonempty_string(self, v: _Value) -> str:
        value = self.string(v, "must be a non-empty string")
        if not value:
            raise self.error(v, "must be a non-empty string")
        return value

    def boolean(self, v: _Value) -> bool:
        if _kind(v.node) != "bool":
            raise self.type_error(v, "must be true or false")
        return bool(self._construct(v))

    def integer(self, v: _Value, minimum: int) -> int:
        expected = f"must be an integer >= {minimum}"
        if _kind(v.node) != "int":
            raise self.type_error(v, expected)
        value = int(self._construct(v))
        if value < minimum:
            raise self.error(v, f"{expected}, not {value}")
        return value

    def at_most(self, v: _Value, value: int, maximum: int) -> int:
        message = config_limits.count_limit(value, maximum, v.path.rpartition(".")[2])
        if message:
            raise self.error(v, message)
        return value

    def number(self, v: _Value, expected: str) -> float:
        if _kind(v.node) not in ("int", "float"):
            raise self.type_error(v, expected)
        try:
            value = float(self._construct(v))
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise self.error(v, f"{expected}, not {v.node.value}")
        return value

    def seconds(self, v: _Value, *, zero_ok: bool = False) -> float:
        """A duration: > 0, or >= 0 with ``zero_ok``."""
        if zero_ok:
            expected = "must be a number of seconds >= 0"
        else:
            expected = "must be a positive number of seconds"
        value = self.number(v, expected)
        if value < 0 or (value == 0 and not zero_ok):
            raise self.error(v, f"{expected}, not {v.node.value}")
        return value

    def choice(self, v: _Value, choices: tuple[str, ...]) -> str:
        expected = f"must be one of: {', '.join(choices)}"
        value = self.text(v, expected)
        if _kind(v.node) != "str" or value not in choices:
            raise self.type_error(v, expected)
        return value

    def octal(self, v: _Value, what: str, example: str) -> int:
        """Permission bits: ``"0600"``/``"600"``/``"0o600"``, or unquoted ``0600``.

        Unquoted, YAML reads ``0600`` as the octal int 384, which is accepted; an
        unquoted ``600`` or ``22`` is decimal to YAML, almost surely not what was
        meant, so it is rejected rather than silently reinterpreted.
        """
        expected = f'must be an octal {what} like "{example}"'
        text = self.text(v, expected)
        kind = _kind(v.node)
        if kind == "int" and not re.fullmatch(r"0[0-7]*", text):
            raise self.error(v, f"{expected} (quote it, or write it with a leading 0)")
        if kind not in ("int", "str") or not _OCTAL_RE.fullmatch(text):
            raise self.type_error(v, expected)
        value = int(text.removeprefix("0o"), 8)
        if value > 0o777:
            raise self.error(v, f"must be an octal {what} from 000 to 777, not {text}")
        return value

    def size(self, v: _Value) -> int:
        expected = "must be a size in bytes like 50MiB, 512MB or 1048576"
        if _kind(v.node) == "int":
            value = int(self._construct(v))
        else:
            try:
                value = parse_size(self.string(v, expected))
            except ValueError:
                raise self.type_error(v, expected) from None
        if value <= 0:
            raise self.error(v, f"must be more than 0 bytes, not {v.node.value}")
        return value

    def signal(self, v: _Value) -> signal.Signals:
        expected = 'must be a signal name like "TERM" or a signal number'
        kind = _kind(v.node)
        if kind not in ("str", "int"):
            raise self.type_error(v, expected)
        raw: str | int = str(v.node.value) if kind == "str" else int(self._construct(v))
        try:
            return parse_signal(raw)
        except ValueError:
            what = "name" if kind == "str" else "number"
            raise self.error(v, f"unknown signal {what} {raw!r}") from None

    def name(self, v: _Value, what: str) -> str:
        """An app, instance or dependency name (YAML ints such as ``0`` count as text)."""
        expected = f"must be an {what} name"
        if _kind(v.node) not in ("str", "int"):
            raise self.type_error(v, expected)
        return self.check_name(v, str(v.node.value), what)

    def check_name(self, v: _Value, name: str, what: str) -> str:
        if not _NAME_RE.fullmatch(name):
            raise self.error(
                v, f"invalid {what} name {name!r} (use letters, digits, '_', '.' and '-')"
            )
        return name

    def directory(self, v: _Value) -> str:
        """A path; a relative one is resolved against the config file's directory."""
        path = self.nonempty_string(v)
        if self.base_dir is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))

    def user(self, v: _Value) -> str:
        name = self.nonempty_string(v)
        try:
            pwd.getpwnam(name)
        except (KeyError, ValueError):  # ValueError: an embedded NUL
            raise self.error(v, f"unknown user {name!r} on this machine") from None
        return name

    def group(self, v: _Value) -> str:
        name = self.nonempty_string(v)
        try:
            grp.getgrnam(name)
        except (KeyError, ValueError):
            raise self.error(v, f"unknown group {name!r} on this machine") from None
        return name


def _optional(reader: Reader) -> Reader:
    """A reader that maps null to None (for settings whose default is None)."""

    def read(v: _Value) -> Any:
        return None if v.is_null else reader(v)

    return read


class _Parser(_Reader):
    """The schema: turns the node tree into a :class:`Config`."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        # Every bound address -> who uses it, to reject the same address twice.
        self._claimed: dict[tuple[str, str, int], str] = {}
        self._app_names: tuple[str, ...] = ()
        # app -> its dependencies with the line of each, for cycle reports.
        self._dependencies: dict[str, list[tuple[str, _Value]]] = {}

    def parse(self, root: yaml.Node | None) -> Config:
        top = self.top_level(root)
        supervisor = self.supervisor(top["supervisor"]) if "supervisor" in top else None
        if supervisor is None or supervisor.http.listen is _DEFAULT_HTTP_LISTEN:
            self._claim_default_http()
        apps = self.apps(top["apps"]) if "apps" in top else {}
        self._check_cycles()
        path = None if self.base_dir is None else os.path.abspath(self.filename)
        return Config(supervisor or SupervisorConfig(), apps, path)

    def top_level(self, root: yaml.Node | None) -> dict[str, _Value]:
        if root is None:
            return {}  # an empty file: every default, no apps
        v = _Value(root, "", 1)
        if isinstance(root, yaml.SequenceNode) or (
            isinstance(root, yaml.ScalarNode) and not v.is_null
        ):
            raise self.type_error(v, "the config must be a mapping with keys supervisor, apps")
        return self.mapping(v, ("supervisor", "apps"))

    # supervisor

    def supervisor(self, v: _Value) -> SupervisorConfig:
        kw, _ = self.section(
            v,
            {
                "state_dir": self.directory,
                "control_socket": self.control_socket,
                "http": self.http,
                "log": self.log,
                "shutdown_timeout": self.seconds,
            },
        )
        return SupervisorConfig(**kw)

    def control_socket(self, v: _Value) -> ControlSocketConfig:
        kw, _ = self.section(
            v,
            {
                "mode": lambda e: self.octal(e, "mode", "0600"),
                "group": _optional(self.group),
            },
        )
        return ControlSocketConfig(**kw)

    def http(self, v: _Value) -> HttpConfig:
        # `http: null` disables the API, as `http: {listen: null}` does: anything
        # else would surprise whoever wrote null to turn it off.
        if v.is_null:
            return HttpConfig(listen=None)
        kw, _ = self.section(v, {"listen": _optional(self.claimed_address)})
        return HttpConfig(**kw)

    def log(self, v: _Value) -> LogConfig:
        kw, _ = self.section(
            v,
            {
                "format": lambda e: LogFormat(self.choice(e, tuple(LogFormat))),
                "level": lambda e: self.choice(e, LOG_LEVELS),
            },
        )
        return LogConfig(**kw)

    # addresses

    def _claim_default_http(self) -> None:
        if _DEFAULT_HTTP_LISTEN is not None:
            key = _address_key(_DEFAULT_HTTP_LISTEN)
            self._claimed[key] = "supervisor.http.listen (its default)"

    def claimed_address(self, v: _Value) -> ListenAddress:
        """An address that nothing else in the config uses."""
        text = self.string(v, 'must be an address like "127.0.0.1:8000" or "unix:/path"')
        try:
            address = parse_address(text)
        except ValueError as exc:
            raise self.error(v, f"invalid address {text!r}: {exc}") from None
        key = _address_key(address)
        if key in self._claimed:
            raise self.error(v, f"address {text} is already used by {self._claimed[key]}")
        self._claimed[key] = f"{v.path} (line {v.line})"
        return address

    # apps

    def apps(self, v: _Value) -> dict[str, AppConfig]:
        entries = self.mapping(v)
        for name, entry in entries.items():
            self.check_name(entry, name, "app")
        self._app_names = tuple(entries)
        return {name: self.app(name, entry) for name, entry in entries.items()}

    def app(self, name: str, v: _Value) -> AppConfig:
        entries = self.mapping(v, _APP_KEYS)
        self.require(v, entries, "command")
        # Keys that decide which placeholders exist are read first.
        instances = DEFAULT_INSTANCES
        if "instances" in entries:
            instances = self.instances(entries["instances"]) or DEFAULT_INSTANCES
        release = _optional(self.release)(entries["release"]) if "release" in entries else None
        listen, shared = self.listen(entries.get("listen"), instances)
        scope = _Scope(
            listen=bool(listen),
            unix_listen=any(address.is_unix for address in listen.values()),
            release=release is not None,
        )
        readers = self._app_readers(name, scope)
        kw = {key: readers[key](entry) for key, entry in entries.items() if key in readers}
        kw["ready"] = self.ready(entries.get("ready"), scope)
        return AppConfig(
            name=name,
            instances=instances,
            release=release,
            listen=listen,
            listen_shared=shared,
            **kw,
        )

    def _app_readers(self, name: str, scope: _Scope) -> dict[str, Reader]:
        """How each remaining key of an app is read, given what its placeholders may use."""
        return {
            "command": lambda e: self.argv(e, scope),
            "cwd": _optional(lambda e: self.cwd(e, scope)),
            "env": lambda e: self.env(e, scope),
            "env_file": _optional(self.env_file),
            "user": _optional(self.user),
            "group": _optional(self.group),
            "umask": _optional(lambda e: self.octal(e, "umask", "022")),
            "socket_activation": self.boolean,
            "health": _optional(lambda e: self.health(e, scope)),
            "restart": lambda e: RestartPolicy(self.choice(e, tuple(RestartPolicy))),
            "backoff": self.backoff,
            "stop": self.stop,
            "reload": lambda e: self.reload(e, scope),
            "watchdog": _optional(self.seconds),
            "max_memory": _optional(self.size),
            "logs": self.logs,
            "depends_on": lambda e: self.depends_on(name, e),
            "autostart": self.boolean,
        }

    def instances(self, v: _Value) -> tuple[str, ...] | None:
        """A list of unique names, or a count N giving "0".."N-1"; null: the default."""
        if v.is_null:
            return None
        if _kind(v.node) == "int":
            count = self.at_most(v, self.integer(v, 1), config_limits.MAX_INSTANCES)
            return tuple(str(i) for i in range(count))
        expected = "must be a list of instance names or a number of instances"
        items = self.sequence(v, expected)
        self.at_most(v, len(items), config_limits.MAX_INSTANCES)
        if not items:
            raise self.error(v, "must not be empty")
        names: dict[str, _Value] = {}
        for item in items:
            instance = self.name(item, "instance")
            if instance in names:
                first = names[instance].line
                raise self.error(item, f"duplicate instance {instance!r} (first on line {first})")
            names[instance] = item
        return tuple(names)

    def listen(
        self, v: _Value | None, instances: tuple[str, ...]
    ) -> tuple[dict[str, ListenAddress], bool]:
        """(instance -> address, shared): one shared address, or one per instance."""
        if v is None or v.is_null:
            return {}, False
        if isinstance(v.node, yaml.ScalarNode):
            address = self.claimed_address(v)
            return dict.fromkeys(instances, address), True
        if not isinstance(v.node, yaml.MappingNode):
            raise self.type_error(v, "must be an address or a mapping of instance to address")
        entries = self.mapping(v)
        for instance, entry in entries.items():
            if instance not in instances:
                known = ", ".join(instances)
                raise self.error(entry, f"unknown instance {instance!r} (instances: {known})")
        for instance in instances:
            if instance not in entries:
                raise self.error(v, f"no address for instance {instance!r}")
        return {i: self.claimed_address(entries[i]) for i in instances}, False

    def release(self, v: _Value) -> ReleaseConfig:
        kw, entries = self.section(
            v,
            {
                "root": self.directory,
                "keep": lambda e: self.integer(e, 0),
                "settle": lambda e: self.seconds(e, zero_ok=True),
            },
        )
        self.require(v, entries, "root")
        return ReleaseConfig(**kw)

    def env(self, v: _Value, scope: _Scope) -> dict[str, str]:
        """Names to values; numbers and bools are kept as written (``yes``, ``08``)."""
        env: dict[str, str] = {}
        for key, entry in self.mapping(v).items():
            if not key or "=" in key or "\0" in key:
                raise self.error(entry, f"invalid environment variable name {key!r}")
            value = self.text(entry, 'must be a string, number or bool (write "" for empty)')
            env[key] = self.template(entry, value, scope)
        return env

    def env_file(self, v: _Value) -> str:
        """A path, relative to the config file's directory; a leading ``-``: optional."""
        text = self.nonempty_string(v)
        dash = "-" if text.startswith("-") else ""
        path = text[len(dash) :]
        if not path:
            raise self.error(v, "must be a path (a leading - makes the file optional)")
        if self.base_dir is not None and not os.path.isabs(path):
            path = os.path.normpath(os.path.join(self.base_dir, path))
        return dash + path

    def cwd(self, v: _Value, scope: _Scope) -> str:
        path = self.template(v, self.nonempty_string(v), scope)
        # With placeholders the path is only known at spawn time ("{release_dir}"
        # is absolute anyway); a plain relative one is relative to the config file.
        if self.base_dir is None or os.path.isabs(path) or _template_fields(path):
            return path
        return os.path.normpath(os.path.join(_escape_braces(self.base_dir), path))

    # checks

    def ready(self, v: _Value | None, scope: _Scope) -> ReadyConfig:
        """Read ``ready`` and fill in the default criterion (see :class:`ReadyConfig`)."""
        readers: dict[str, Reader] = {
            **self._check_readers(scope),
            "notify": self.boolean,
            "delay": _optional(lambda e: self.seconds(e, zero_ok=True)),
            "timeout": self.seconds,
        }
        kw, entries = self.section(v, readers) if v is not None else ({}, {})
        self._at_most_one_check(entries)
        criteria = ("http", "tcp", "exec", "delay")
        if not kw.get("notify") and all(kw.get(key) is None for key in criteria):
            tcp_listen = scope.listen and not scope.unix_listen
            if tcp_listen:
                kw["tcp"] = DEFAULT_READY_TCP
            else:
                kw["delay"] = DEFAULT_READY_DELAY
        ready = ReadyConfig(**kw)
        self._check_delay(ready, entries)
        return ready

    def _check_delay(self, ready: ReadyConfig, entries: dict[str, _Value]) -> None:
        """A delay that reaches the timeout would make every start fail."""
        if ready.delay is None or ready.delay < ready.timeout:
            return
        delay = entries.get("delay")
        if delay is not None and not delay.is_null:
            raise self.error(delay, f"must be less than ready.timeout ({ready.timeout:g})")
        # Only a configured timeout can be shorter than the default delay.
        raise self.error(
            entries["timeout"], f"must be more than the default ready.delay ({ready.delay:g})"
        )

    def health(self, v: _Value, scope: _Scope) -> HealthConfig:
        readers: dict[str, Reader] = {
            **self._check_readers(scope),
            "interval": self.seconds,
            "timeout": self.seconds,
            "failures": lambda e: self.integer(e, 1),
        }
        kw, entries = self.section(v, readers)
        self._at_most_one_check(entries)
        if all(kw.get(key) is None for key in ("http", "tcp", "exec")):
            raise self.error(v, "must set exactly one of: http, tcp, exec")
        return HealthConfig(**kw)

    def _check_readers(self, scope: _Scope) -> dict[str, Reader]:
        return {
            "http": _optional(lambda e: self.http_url(e, scope)),
            "tcp": _optional(lambda e: self.tcp_target(e, scope)),
            "exec": _optional(lambda e: self.argv(e, scope)),
        }

    def _at_most_one_check(self, entries: dict[str, _Value]) -> None:
        # In file order, so that the error points at the second probe written.
        kinds = ("http", "tcp", "exec")
        given = [entry for key, entry in entries.items() if key in kinds and not entry.is_null]
        if len(given) > 1:
            first = given[0]
            message = (
                f"only one of http, tcp, exec may be set ({first.path} is on line {first.line})"
            )
            raise self.error(given[1], message)

    def http_url(self, v: _Value, scope: _Scope) -> str:
        url = self.string(v, 'must be a URL like "http://{host}:{port}/health"')
        if not url.startswith("http://") or len(url) == len("http://"):
            raise self.error(v, f'must be a URL starting with "http://", not {url!r}')
        return self.template(v, url, scope)

    def tcp_target(self, v: _Value, scope: _Scope) -> str:
        expected = 'must be "host:port", e.g. "{host}:{port}"'
        target = self.template(v, self.string(v, expected), scope)
        host, sep, port = render(target, _SAMPLE_VALUES).rpartition(":")
        if not (sep and host and _PORT_RE.fullmatch(port) and 1 <= int(port) <= 65535):
            raise self.error(v, f"{expected}, not {target!r}")
        return target

    # commands and templates

    def argv(self, v: _Value, scope: _Scope) -> tuple[str, ...]:
        """A command: a list of arguments, or a string split like a shell would."""
        expected = "must be a command: a list of strings or a command line"
        if isinstance(v.node, yaml.SequenceNode):
            items = self.sequence(v, expected)
            args = [self.template(i, self.text(i, "must be a string"), scope) for i in items]
        else:
            args = self._split(v, self.text(v, expected), scope)
        if not args or not args[0]:
            raise self.error(v, "must not be empty (it names the program to run)")
        return tuple(args)

    def _split(self, v: _Value, line: str, scope: _Scope) -> list[str]:
        try:
            args = shlex.split(line)
        except ValueError as exc:
            raise self.error(v, f"cannot split the command line: {exc}") from None
        return [self.template(v, arg, scope) for arg in args]

    def template(self, v: _Value, text: str, scope: _Scope) -> str:
        """Check that ``text`` only uses placeholders this app can fill; return it."""
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise self.error(
                v, f"malformed placeholder in {text!r}: {exc} (write {{{{ and }}}} for braces)"
            ) from None
        for _, name, spec, conversion in parts:
            if name is not None:
                self._check_placeholder(v, name, spec or conversion, scope)
        return text

    def _check_placeholder(self, v: _Value, name: str, extra: str | None, scope: _Scope) -> None:
        if name not in PLACEHOLDERS:
            known = ", ".join(PLACEHOLDERS)
            raise self.error(v, f"unknown placeholder {{{name}}} (expected one of: {known})")
        if extra:
            raise self.error(v, f"placeholder {{{name}}} cannot have a format spec or conversion")
        if name in ("host", "port") and not scope.listen:
            raise self.error(v, f"{{{name}}} needs a listen address, and this app has none")
        if name in ("host", "port") and scope.unix_listen:
            raise self.error(v, f"{{{name}}} has no value: this app listens on a unix socket")
        if name in ("release", "release_dir") and not scope.release:
            raise self.error(v, f"{{{name}}} needs a 'release' setting, and this app has none")

    # restart, stop, reload, logs

    def backoff(self, v: _Value) -> BackoffConfig:
        kw, entries = self.section(
            v,
            {
                "initial": lambda e: self.seconds(e, zero_ok=True),
                "max": lambda e: self.seconds(e, zero_ok=True),
                "reset_after": self.seconds,
                "max_retries": _optional(lambda e: self.integer(e, 0)),
            },
        )
        backoff = BackoffConfig(**kw)
        if backoff.max < backoff.initial:
            if "max" in entries:
                raise self.error(
                    entries["max"], f"must be >= backoff.initial ({backoff.initial:g})"
                )
            raise self.error(
                entries["initial"], f"must be <= backoff.max (default {backoff.max:g})"
            )
        return backoff

    def stop(self, v: _Value) -> StopConfig:
        kw, _ = self.section(v, {"signal": self.signal, "timeout": self.seconds})
        return StopConfig(**kw)

    def reload(self, v: _Value, scope: _Scope) -> ReloadConfig:
        """``swap`` (or null), or ``{signal, pidfile}`` with both keys required."""
        if v.is_null or (_kind(v.node) == "str" and v.node.value == "swap"):
            return ReloadConfig()
        if not isinstance(v.node, yaml.MappingNode):
            raise self.type_error(v, 'must be "swap" or a mapping with keys signal, pidfile')
        kw, entries = self.section(
            v,
            {
                "signal": self.signal,
                "pidfile": lambda e: self.template(e, self.nonempty_string(e), scope),
            },
        )
        self.require(v, entries, "signal", "pidfile")
        return ReloadConfig(**kw)

    def logs(self, v: _Value) -> LogsConfig:
        kw, _ = self.section(
            v,
            {
                "dir": _optional(self.directory),
                "max_bytes": self.size,
                "backups": lambda e: self.at_most(e, self.integer(e, 0), config_limits.MAX_BACKUPS),
            },
        )
        return LogsConfig(**kw)

    # dependencies

    def depends_on(self, app: str, v: _Value) -> tuple[str, ...]:
        if v.is_null:
            return ()
        deps: list[str] = []
        for item in self.sequence(v, "must be a list of app names"):
            dep = self.name(item, "app")
            if dep == app:
                raise self.error(item, "an app cannot depend on itself")
            if dep not in self._app_names:
                known = ", ".join(self._app_names)
                raise self.error(item, f"unknown app {dep!r} (apps: {known})")
            if dep in deps:
                raise self.error(item, f"{dep!r} is listed twice")
            deps.append(dep)
            self._dependencies.setdefault(app, []).append((dep, item))
        return tuple(deps)

    def _check_cycles(self) -> None:
        """Reject ``a -> b -> a``: such apps could never be started in order."""
        done: set[str] = set()
        for app in self._dependencies:
            self._visit(app, [], done)

    def _visit(self, app: str, stack: list[str], done: set[str]) -> None:
        if app in done:
            return
        if app in stack:
            cycle = [*stack[stack.index(app) :], app]
            # Report it where the cycle's first edge is written.
            edge = next(item for dep, item in self._dependencies[app] if dep == cycle[1])
            raise self.error(edge, f"dependency cycle: {' -> '.join(cycle)}")
        stack.append(app)
        for dep, _ in self._dependencies.get(app, []):
            self._visit(dep, stack, done)
        stack.pop()
        done.add(app)


_APP_KEYS = tuple(
    f.name
    for f in dataclasses.fields(AppConfig)
    if "doc" in f.metadata and not f.metadata["derived"]
)


def _compose(text: str, filename: str) -> yaml.Node | None:
    """The YAML node tree of ``text``; a syntax error becomes a ConfigError."""
    config_limits.check_size(text, filename)
    try:  # before the recursive composer runs: nesting, tags, NULs, sizes
        config_limits.check_events(_limit_events(text), filename)
    except yaml.YAMLError:
        pass  # a syntax error: the composer below reports it in its own words
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        config_limits.check_tree(root, _node_children, _node_line, filename)
        return root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(_yaml_message(exc), file=filename, line=line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError(message, file=filename, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=filename) from None


def _limit_events(text: str) -> Iterator[config_limits.Event]:
    """PyYAML's parse events (made without recursion), in config_limits' terms."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        kind = _EVENT_KINDS.get(type(event))
        if kind is not None:
            line = event.start_mark.line + 1 if event.start_mark is not None else None
            tag = getattr(event, "tag", None)
            yield config_limits.Event(kind, tag, str(getattr(event, "value", "")), line)


_EVENT_KINDS: dict[type, str] = {
    yaml.ScalarEvent: "scalar",
    yaml.AliasEvent: "alias",
    yaml.MappingStartEvent: "map",
    yaml.SequenceStartEvent: "seq",
    yaml.MappingEndEvent: "end",
    yaml.SequenceEndEvent: "end",
}


def _node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _node_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with its context: "while parsing X (line N)" or "expected X"."""
    problem, context = exc.problem or "", exc.context or ""
    if problem.startswith("but ") and context:
        return f"invalid YAML: {context}, {problem}"
    message = f"invalid YAML: {problem or context}"
    if problem and context and exc.context_mark is not None:
        message += f" ({context} on line {exc.context_mark.line + 1})"
    return message


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Validate YAML text into a :class:`Config`, or raise :class:`ConfigError`.

    The error names ``filename``, the 1-based line and the key path of the first
    offending key or value found. Rules beyond the types of the dataclasses:

    - App and instance names match ``[A-Za-z0-9_.-]+``.
    - ``command`` (required) and check ``exec``: a list (scalar items are taken as
      written, so ``[sleep, 10]`` works), or a string split with :func:`shlex.split`.
    - ``instances``: unique names, or a count N >= 1 giving "0".."N-1".
    - ``listen``: one address shared by every instance (``listen_shared``), or a
      mapping giving every instance its own. Addresses are ``IP:port``,
      ``[IPv6]:port``, ``localhost:port`` or ``unix:/absolute/path``; no address may
      be used twice, including the HTTP API's (its default too).
    - Modes and umasks are octal; sizes take B, KB/MB/GB (decimal), KiB/MiB/GiB and
      K/M/G (binary); signals are names (``TERM``, ``SIGTERM``) or numbers.
    - Placeholders (:data:`PLACEHOLDERS`) are allowed in command, env values, cwd,
      checks and reload.pidfile; ``{host}``/``{port}`` need a TCP listen address,
      ``{release}``/``{release_dir}`` need ``release``; ``{{``/``}}`` are braces.
    - ``user``/``group`` must exist on this machine; ``depends_on`` names other
      apps, without cycles.
    """
    config = _Parser(filename).parse(_compose(text, filename))
    return dataclasses.replace(config, text=text)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file, or raise :class:`ConfigError`."""
    p = Path(path)
    try:
        with p.open("rb") as f:  # bounded: a huge file is refused, not read into memory
            text = f.read(config_limits.MAX_FILE_BYTES + 1).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", file=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read config: not UTF-8 text ({exc.reason})", file=str(p)
        ) from exc
    return parse_config(text, str(p))


def describe_settings() -> list[tuple[str, Any, str]]:
    """(key path, default, doc) of every setting, for docs and ``--help``."""
    rows: list[tuple[str, Any, str]] = []

    def walk(prefix: str, cls: type[Any]) -> None:
        for f in dataclasses.fields(cls):
            if "doc" not in f.metadata or f.metadata["derived"]:
                continue
            default: Any = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            rows.append((f"{prefix}.{f.name}", default, f.metadata["doc"]))
            if dataclasses.is_dataclass(default) and not isinstance(default, ListenAddress):
                walk(f"{prefix}.{f.name}", type(default))

    walk("supervisor", SupervisorConfig)
    walk("apps.NAME", AppConfig)
    return rows
