"""The configuration: typed, frozen settings, their defaults and docs, and validation.

This is the only module that imports yaml. Every setting is declared once, below,
with its default and its documentation (``setting(default, doc)``); the loader turns
a YAML file into these frozen dataclasses or raises :class:`ConfigError` naming the
file, the line and the key path (``apps.web.stop.timeout: must be a positive number
of seconds``).
"""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .paths import default_state_dir

PLACEHOLDERS = ("app", "instance", "host", "port", "release", "release_dir", "generation")


def setting(default: Any, doc: str, *, factory: bool = False) -> Any:
    """Declare one setting: its default and its documentation, in one place."""
    if factory:
        return field(default_factory=default, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


class RestartPolicy(StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


@dataclass(frozen=True)
class ListenAddress:
    """One address the supervisor binds: ``host:port``, ``[v6]:port`` or ``unix:/path``."""

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
    group: str | None = setting(None, "Group whose members may use supctl (besides root and the daemon's user).")


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
    state_dir: str = setting(default_state_dir, "Directory of supctl.sock, notify.sock, the pidfile, state.json and releases/.", factory=True)
    control_socket: ControlSocketConfig = setting(ControlSocketConfig, "The control socket's permissions.", factory=True)
    http: HttpConfig = setting(HttpConfig, "The HTTP API.", factory=True)
    log: LogConfig = setting(LogConfig, "The daemon's own log.", factory=True)
    shutdown_timeout: float = setting(60.0, "Seconds a graceful shutdown of all apps may take before processes are killed.")


@dataclass(frozen=True)
class CheckConfig:
    """One probe: exactly one of http, tcp, exec (placeholders allowed)."""

    http: str | None = setting(None, "URL that must answer 2xx, e.g. http://{host}:{port}/health.")
    tcp: str | None = setting(None, "host:port that must accept a connection (by this instance's processes).")
    exec: tuple[str, ...] | None = setting(None, "Command that must exit 0.")


@dataclass(frozen=True)
class ReadyConfig(CheckConfig):
    notify: bool = setting(False, "Ready when the child sends READY=1 on NOTIFY_SOCKET.")
    delay: float | None = setting(None, "Ready once the process has stayed up this many seconds.")
    timeout: float = setting(60.0, "Seconds to become ready before the start counts as failed.")


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
    max_retries: int | None = setting(None, "Consecutive failed starts before FATAL; null retries forever.")


@dataclass(frozen=True)
class StopConfig:
    signal: signal.Signals = setting(signal.SIGTERM, "Signal sent to the process group to stop it.")
    timeout: float = setting(30.0, "Seconds to wait after the signal before SIGKILL of the group.")


@dataclass(frozen=True)
class ReloadConfig:
    """``swap`` (default): start a new generation beside the old one. Or a signal
    with a pidfile for apps that re-exec themselves (Unicorn, gunicorn master)."""

    signal: signal.Signals | None = setting(None, "Signal that makes the app re-exec itself; null: swap.")
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


@dataclass(frozen=True)
class AppConfig:
    name: str
    command: tuple[str, ...] = setting((), "The program and its arguments (list, or a string split like a shell would).")
    cwd: str | None = setting(None, "Working directory (placeholders allowed).")
    env: dict[str, str] = setting(dict, "Extra environment variables (placeholders allowed).", factory=True)
    user: str | None = setting(None, "Run as this user (the daemon must be root).")
    group: str | None = setting(None, "Run with this group.")
    umask: int | None = setting(None, "umask of the child (octal string).")
    instances: tuple[str, ...] = setting(("primary",), "Instance names; an integer N gives 0..N-1.")
    listen: dict[str, ListenAddress] = setting(dict, "Instance name to the address it accepts on (one shared address maps every instance to it).", factory=True)
    listen_shared: bool = setting(False, "True when one address is shared by all instances.")
    socket_activation: bool = setting(True, "Pass the bound sockets as LISTEN_FDS; false: the app binds {port} itself.")
    ready: ReadyConfig = setting(ReadyConfig, "What 'started' means; gates start, reload and deploy.", factory=True)
    health: HealthConfig | None = setting(None, "Liveness checks while running.")
    restart: RestartPolicy = setting(RestartPolicy.ALWAYS, "always | on-failure | never.")
    backoff: BackoffConfig = setting(BackoffConfig, "Restart delays of a crash-looping instance.", factory=True)
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


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Validate YAML text into a :class:`Config`, or raise :class:`ConfigError`."""
    raise NotImplementedError


def load_config(path: str | Path) -> Config:
    """Read and validate a config file, or raise :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", file=str(p)) from exc
    return parse_config(text, str(p))


def describe_settings() -> list[tuple[str, Any, str]]:
    """(key path, default, doc) of every setting, for docs and ``--help``."""
    rows: list[tuple[str, Any, str]] = []

    def walk(prefix: str, cls: type[Any]) -> None:
        for f in dataclasses.fields(cls):
            if "doc" not in f.metadata:
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
