"""The settings: every section a frozen dataclass, every key declared once on its field.

Each declaration (:func:`config_schema.setting`) holds the key, the validator (and
so the type), the default and the doc; the parser walks these declarations and
``supervisord-lite --help-config`` and docs/configuration.md are generated from them.
"""

# ruff: noqa: RUF009
# (setting() is dataclasses.field with a declaration attached, not a shared mutable default.)

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from ..instance.states import Backoff, RestartPolicy
from ..paths import default_state_dir
from . import limits
from . import templates as t
from . import validators as v
from .schema import setting
from .values import (
    DEFAULT_INSTANCES,
    LOG_LEVELS,
    SOCKET_STDIN,
    ListenAddress,
    LogFormat,
)

_BACKOFF = Backoff()  # the arithmetic's defaults, declared with it (instance.states)
DEFAULT_READY_DELAY = 1.0
DEFAULT_READY_TCP = "{host}:{port}"
# The scalar forms of `reload:` (the mapping form is {signal, pidfile}).
RELOAD_SWAP = "swap"
RELOAD_RESTART = "restart"


@dataclass(frozen=True)
class ControlSocketConfig:
    mode: int = setting(
        0o600, v.octal("mode", "0600"), "Permission bits of supctl.sock (octal string in YAML)."
    )
    group: str | None = setting(
        None,
        v.GROUP,
        "Group whose members may use supctl (besides root and the daemon's user).",
        nullable=True,
    )


@dataclass(frozen=True)
class HttpConfig:
    listen: ListenAddress | None = setting(
        ListenAddress("127.0.0.1:9190", "127.0.0.1", 9190),
        v.ADDRESS,
        "Address of the read-only HTTP API (/status, /healthz, /metrics); null disables it.",
        nullable=True,
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        v.HOST_NAMES,
        "Host names (or addresses) the HTTP API answers besides loopback names and the"
        " address a request arrived on; others get 421 (DNS rebinding). Any Host is"
        " answered on a unix socket.",
    )


@dataclass(frozen=True)
class LogConfig:
    format: LogFormat = setting(
        LogFormat.AUTO,
        v.choice(tuple(LogFormat), LogFormat),
        "auto: readable on a terminal, JSON otherwise.",
    )
    level: str = setting("info", v.choice(LOG_LEVELS), "The least severe lines written.")


@dataclass(frozen=True)
class NotifyConfig:
    """A hook told about an app's events: a command (the event as JSON on its standard
    input) and/or a webhook (the same JSON POSTed). One attempt each, never retried."""

    exec: tuple[str, ...] | None = setting(
        None, t.ARGV, "Command run with the event as JSON on its standard input.", nullable=True
    )
    webhook: str | None = setting(
        None, v.URL, "URL the event is POSTed to (application/json).", nullable=True
    )
    user: str | None = setting(
        None,
        v.USER,
        "Run exec as this user; null: the daemon's own user.",
        nullable=True,
    )
    events: tuple[str, ...] = setting(
        v.NOTIFY_EVENTS, v.EVENTS, "The events that are sent; default: all of them."
    )
    timeout: float = setting(10.0, v.seconds(), "Seconds one delivery may take (then killed).")
    burst: int = setting(
        5,
        v.integer(1),
        "Messages per event kind and app within `window`; more are folded into a count.",
    )
    window: float = setting(60.0, v.seconds(), "Seconds over which `burst` is counted.")


@dataclass(frozen=True)
class SupervisorConfig:
    state_dir: str = setting(
        default_state_dir,
        v.DIRECTORY,
        "Directory of supctl.sock, notify.sock, the pidfile, state.json and releases/.",
        factory=True,
        shown_default="/run/supervisord-lite (root), else $XDG_RUNTIME_DIR/supervisord-lite",
    )
    control_socket: ControlSocketConfig = setting(
        ControlSocketConfig, ControlSocketConfig, "The control socket's permissions.", factory=True
    )
    http: HttpConfig = setting(
        HttpConfig, HttpConfig, "The HTTP API; null disables it.", factory=True
    )
    log: LogConfig = setting(LogConfig, LogConfig, "The daemon's own log.", factory=True)
    shutdown_timeout: float = setting(
        60.0,
        v.seconds(),
        "Seconds a graceful shutdown of all apps may take before processes are killed.",
    )
    notify: NotifyConfig | None = setting(
        None, NotifyConfig, "A hook told about every app's events.", nullable=True
    )


@dataclass(frozen=True)
class CheckConfig:
    """One probe: exactly one of http, tcp, exec (placeholders allowed)."""

    http: str | None = setting(
        None,
        t.HTTP_URL,
        "URL that must answer 2xx, e.g. http://{host}:{port}/health.",
        nullable=True,
    )
    tcp: str | None = setting(
        None,
        t.TCP_TARGET,
        "host:port that must accept a connection (by this instance's processes).",
        nullable=True,
    )
    exec: tuple[str, ...] | None = setting(None, t.ARGV, "Command that must exit 0.", nullable=True)


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

    notify: bool = setting(False, v.BOOL, "Ready when the child sends READY=1 on NOTIFY_SOCKET.")
    delay: float | None = setting(
        None,
        v.seconds(zero_ok=True),
        "Ready once the process has stayed up this many seconds (less than timeout).",
        nullable=True,
    )
    timeout: float = setting(
        60.0, v.seconds(), "Seconds to become ready before the start counts as failed."
    )


def _default_ready() -> ReadyConfig:
    """What the loader fills in for an app without a listen address and without ``ready``."""
    return ReadyConfig(delay=DEFAULT_READY_DELAY)


@dataclass(frozen=True)
class HealthConfig(CheckConfig):
    interval: float = setting(
        5.0,
        v.seconds(),
        "Seconds between liveness checks (each falls due on a tick all instances share:"
        " at most 0.25 s, and a tenth of the interval, later).",
    )
    timeout: float = setting(2.0, v.seconds(), "Seconds one check may take.")
    failures: int = setting(
        3, v.integer(1), "Consecutive failed checks that make the instance be restarted."
    )


@dataclass(frozen=True)
class BackoffConfig:
    initial: float = setting(
        _BACKOFF.initial,
        v.seconds(zero_ok=True),
        "Delay before the second consecutive restart; doubles each time.",
    )
    max: float = setting(
        _BACKOFF.max, v.seconds(zero_ok=True), "Upper bound of the restart delay (>= initial)."
    )
    reset_after: float = setting(
        _BACKOFF.reset_after, v.seconds(), "Seconds of running that forgive earlier failures."
    )
    max_retries: int | None = setting(
        _BACKOFF.max_retries,
        v.integer(0),
        "Consecutive failed starts before FATAL; null retries forever.",
        nullable=True,
    )


@dataclass(frozen=True)
class StopConfig:
    signal: signal.Signals = setting(
        signal.SIGTERM, v.SIGNAL, "Signal sent to the process group to stop it."
    )
    timeout: float = setting(
        30.0, v.seconds(), "Seconds to wait after the signal before SIGKILL of the group."
    )


@dataclass(frozen=True)
class ReloadConfig:
    """``swap`` (the default): start a new generation beside the old one. ``restart``
    (the default with ``socket_activation: false``): for apps whose instances cannot
    run twice (a fixed port bound by the app itself), stop the old generation, then
    start the new one, gated on readiness; the other instances serve meanwhile. Or a
    signal with a pidfile for apps that re-exec themselves (Unicorn, gunicorn master)."""

    signal: signal.Signals | None = setting(
        None, v.SIGNAL, "Signal that makes the app re-exec itself; null: swap.", required=True
    )
    pidfile: str | None = setting(
        None, t.TEMPLATE_PATH, "Where the re-executed master writes its pid.", required=True
    )
    # Derived from `reload: restart` (or socket_activation: false), not a key of its own.
    restart: bool = False

    @property
    def is_swap(self) -> bool:
        """A new generation boots beside the old one."""
        return self.signal is None and not self.restart

    @property
    def method(self) -> str:
        """How an instance is replaced, as the plan and the progress lines say."""
        return "restart (stop-then-start)" if self.restart else "hot-swap"

    @property
    def doing(self) -> str:
        """:attr:`method` in a progress line (``web:backup swapping to v2``)."""
        return self.method if self.restart else "swapping"


@dataclass(frozen=True)
class LogsConfig:
    dir: str | None = setting(
        None,
        v.DIRECTORY,
        "Directory of APP.INSTANCE.log files; null: STATE_DIR/logs.",
        nullable=True,
    )
    max_bytes: int = setting(50 * 1024 * 1024, v.SIZE, "Size at which a log file is rotated.")
    backups: int = setting(
        5,
        v.integer(0, limits.MAX_BACKUPS),
        "Rotated files kept (APP.INSTANCE.log.1 ...).",
    )


@dataclass(frozen=True)
class ReleaseConfig:
    root: str = setting(
        "", v.DIRECTORY, "Directory holding releases/NAME and the current symlink.", required=True
    )
    keep: int = setting(5, v.integer(0), "Old release directories kept; older ones are pruned.")
    settle: float = setting(
        3.0,
        v.seconds(zero_ok=True),
        "Seconds a deploy's canary (the backup) must stay ready and healthy "
        "before the primary is swapped.",
    )
    artifact: str | None = setting(
        None,
        v.ARTIFACT,
        "Default artifact of `deploy` ({app}, {release} filled in): an http(s) or file:// "
        "URL or an absolute path.",
        nullable=True,
    )
    artifact_sha256: str | None = setting(
        None,
        v.ARTIFACT,
        "Where the artifact's checksum is (a sha256sum file beside it) when `deploy` "
        "gives no --sha256; null: ARTIFACT.sha256.",
        nullable=True,
    )
    max_artifact: int = setting(1 << 30, v.SIZE, "Largest artifact downloaded (bytes).")
    max_unpacked: int = setting(
        4 << 30, v.SIZE, "Largest total size of an artifact's unpacked files."
    )
    artifact_timeout: float = setting(
        600.0, v.seconds(), "Seconds the download, and then the unpacking, may take each."
    )


@dataclass(frozen=True)
class DeployTasksConfig:
    """One-shot tasks of a deploy, run in the new release's directory as the app (its
    user, group, umask, environment and a cgroup of their own), each killed whole at
    ``timeout``."""

    before: tuple[tuple[str, ...], ...] = setting(
        (),
        t.COMMANDS,
        "Run once the release is in place, before any instance changes; a failure "
        "refuses the deploy.",
    )
    after: tuple[tuple[str, ...], ...] = setting(
        (), t.COMMANDS, "Run once the deploy is promoted; a failure is reported."
    )
    timeout: float = setting(300.0, v.seconds(), "Seconds each task may take.")
    undo_failed_after: bool = setting(
        False, v.BOOL, "Roll back when an `after` task fails (else the deploy stands)."
    )


@dataclass(frozen=True)
class AppConfig:
    name: str
    command: tuple[str, ...] = setting(
        (),
        t.ARGV,
        "The program and its arguments (list, or a string split like a shell would).",
        required=True,
    )
    cwd: str | None = setting(
        None, t.CWD, "Working directory (placeholders allowed).", nullable=True
    )
    env: dict[str, str] = setting(
        dict, t.ENV, "Extra environment variables (placeholders allowed).", factory=True
    )
    env_file: str | None = setting(
        None,
        v.ENV_FILE,
        "KEY=value file read at each spawn (systemd EnvironmentFile=; -path: optional).",
        nullable=True,
    )
    user: str | None = setting(
        None, v.USER, "Run as this user (the daemon must be root).", nullable=True
    )
    group: str | None = setting(None, v.GROUP, "Run with this group.", nullable=True)
    umask: int | None = setting(
        None, v.octal("umask", "022"), "umask of the child (octal string).", nullable=True
    )
    instances: tuple[str, ...] = setting(
        DEFAULT_INSTANCES, v.INSTANCES, "Instance names; an integer N gives 0..N-1.", phase=0
    )
    listen: dict[str, ListenAddress] = setting(
        dict,
        v.LISTEN,
        "Instance name to the address it accepts on "
        "(one shared address maps every instance to it); null: no sockets.",
        factory=True,
        phase=0,
        shown_default="null",
    )
    # Derived from listen (one address written for all), not a key of its own.
    listen_shared: bool = False
    socket_activation: bool | str = setting(
        True,
        v.SOCKET_ACTIVATION,
        "Pass the bound sockets as LISTEN_FDS; false: the app binds {port} itself; "
        f'"{SOCKET_STDIN}": the instance\'s one socket is its standard input (inetd, '
        "systemd StandardInput=socket, Java's System.inheritedChannel()).",
    )
    ready: ReadyConfig = setting(
        _default_ready,
        ReadyConfig,
        "What 'started' means; gates start, reload and deploy. Default: tcp {host}:{port} "
        "with a TCP listen address, else delay 1.0.",
        factory=True,
        phase=2,
    )
    health: HealthConfig | None = setting(
        None, HealthConfig, "Liveness checks while running (one of http, tcp, exec).", nullable=True
    )
    restart: RestartPolicy = setting(
        RestartPolicy.ALWAYS,
        v.choice(tuple(RestartPolicy), RestartPolicy),
        "When an exited instance is started again.",
    )
    backoff: BackoffConfig = setting(
        BackoffConfig, BackoffConfig, "Restart delays of a crash-looping instance.", factory=True
    )
    stop: StopConfig = setting(StopConfig, StopConfig, "How an instance is stopped.", factory=True)
    reload: ReloadConfig = setting(
        ReloadConfig,
        ReloadConfig,
        f'How a reload, deploy or update replaces an instance: "{RELOAD_SWAP}" (beside the old '
        f'one), "{RELOAD_RESTART}" (stop-then-start, one instance at a time: apps that cannot '
        "run twice; the default with socket_activation: false), or {signal, pidfile}.",
        factory=True,
    )
    watchdog: float | None = setting(
        None, v.seconds(), "Seconds within which the child must send WATCHDOG=1.", nullable=True
    )
    max_memory: int | None = setting(
        None, v.SIZE, "RSS in bytes above which the instance is replaced.", nullable=True
    )
    logs: LogsConfig = setting(LogsConfig, LogsConfig, "Captured output of the app.", factory=True)
    depends_on: tuple[str, ...] = setting(
        (), v.DEPENDS_ON, "Apps that must be ready before this one starts."
    )
    release: ReleaseConfig | None = setting(
        None, ReleaseConfig, "Releases under root/releases/NAME.", nullable=True, phase=0
    )
    autostart: bool = setting(
        True, v.BOOL, "Start this app when the daemon starts (and on update)."
    )
    deploy: DeployTasksConfig = setting(
        DeployTasksConfig,
        DeployTasksConfig,
        "One-shot tasks around a deploy (a migration before, a reindex after).",
        factory=True,
    )
    notify: NotifyConfig | None = setting(
        None, NotifyConfig, "A hook told about this app's events.", nullable=True
    )

    def listen_for(self, instance: str) -> ListenAddress | None:
        return self.listen.get(instance)

    @property
    def socket_on_stdin(self) -> bool:
        """The instance's socket is handed over as its standard input, not LISTEN_FDS."""
        return self.socket_activation == SOCKET_STDIN

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
