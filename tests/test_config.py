"""Tests of the config loader: valid YAML becomes the documented objects, and every
invalid value is reported with the file, the key path and the right line."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from supervisord_lite.config.parser import load_config, parse_config
from supervisord_lite.config.reference import describe_settings
from supervisord_lite.config.settings import (
    AppConfig,
    BackoffConfig,
    Config,
    ControlSocketConfig,
    DeployTasksConfig,
    HealthConfig,
    HttpConfig,
    LogConfig,
    LogsConfig,
    NotifyConfig,
    ReadyConfig,
    ReleaseConfig,
    ReloadConfig,
    StopConfig,
    SupervisorConfig,
)
from supervisord_lite.config.values import (
    DEFAULT_INSTANCES,
    ListenAddress,
    LogFormat,
)
from supervisord_lite.errors import ConfigError
from supervisord_lite.instance.states import RestartPolicy

CONFIG_FILE = "/srv/conf/supervisor.yaml"


def parse(text: str, filename: str = CONFIG_FILE) -> Config:
    """Parse dedented YAML as if it came from CONFIG_FILE."""
    return parse_config(textwrap.dedent(text), filename)


def parse_error(text: str) -> ConfigError:
    """The ConfigError that parsing dedented YAML raises."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


def assert_error(text: str, path: str | None, line: int, fragment: str) -> None:
    """Parsing fails at ``path`` on ``line`` with a message containing ``fragment``."""
    error = parse_error(text)
    assert (error.file, error.path, error.line) == (CONFIG_FILE, path, line), str(error)
    assert fragment in error.reason, str(error)


# --- valid configs ---------------------------------------------------------------------

FULL = """\
supervisor:
  state_dir: state
  control_socket: {mode: "0640", group: root}
  http: {listen: "[::1]:9191"}
  log: {format: json, level: debug}
  shutdown_timeout: 90

apps:
  web:
    command: ["gunicorn", "--bind", "fd://3", "app:wsgi", 4]
    cwd: "{release_dir}"
    env: {MODE: production, WORKERS: 4, DEBUG: no, NAME: "{app}-{instance}"}
    env_file: -web.env
    user: root
    group: root
    umask: "027"
    instances: [primary, backup]
    listen: "localhost:8000"
    socket_activation: false
    ready: {http: "http://{host}:{port}/ready", notify: true, timeout: 30}
    health: {tcp: "{host}:{port}", interval: 10, timeout: 1.5, failures: 5}
    restart: on-failure
    backoff: {initial: 1, max: 60, reset_after: 120, max_retries: 10}
    stop: {signal: SIGINT, timeout: 45}
    reload: {signal: usr2, pidfile: "/run/{app}.{instance}.pid"}
    watchdog: 20
    max_memory: 512MiB
    logs: {dir: logs, max_bytes: 10MB, backups: 2}
    depends_on: [db]
    release: {root: /srv/web, keep: 3}
    autostart: false
    deploy: {before: ["bin/migrate --check"], timeout: 120}
    notify: {exec: [/usr/local/bin/page], events: [crash, fatal], burst: 3}
  db:
    command: postgres -D '/var/lib/pg data' -k {{dir}}
"""


def test_full_config_parses_to_the_expected_objects() -> None:
    """Every key of the full example is read into the matching dataclass field."""
    config = parse(FULL)
    address = ListenAddress("localhost:8000", host="127.0.0.1", port=8000)
    assert config.path == CONFIG_FILE
    assert config.supervisor == SupervisorConfig(
        state_dir="/srv/conf/state",
        control_socket=ControlSocketConfig(mode=0o640, group="root"),
        http=HttpConfig(listen=ListenAddress("[::1]:9191", host="::1", port=9191)),
        log=LogConfig(format=LogFormat.JSON, level="debug"),
        shutdown_timeout=90.0,
    )
    assert config.apps["web"] == AppConfig(
        name="web",
        command=("gunicorn", "--bind", "fd://3", "app:wsgi", "4"),
        cwd="{release_dir}",
        env={"MODE": "production", "WORKERS": "4", "DEBUG": "no", "NAME": "{app}-{instance}"},
        env_file="-/srv/conf/web.env",
        user="root",
        group="root",
        umask=0o027,
        instances=("primary", "backup"),
        listen={"primary": address, "backup": address},
        listen_shared=True,
        socket_activation=False,
        ready=ReadyConfig(http="http://{host}:{port}/ready", notify=True, timeout=30.0),
        health=HealthConfig(tcp="{host}:{port}", interval=10.0, timeout=1.5, failures=5),
        restart=RestartPolicy.ON_FAILURE,
        backoff=BackoffConfig(initial=1.0, max=60.0, reset_after=120.0, max_retries=10),
        stop=StopConfig(signal=signal.SIGINT, timeout=45.0),
        reload=ReloadConfig(signal=signal.SIGUSR2, pidfile="/run/{app}.{instance}.pid"),
        watchdog=20.0,
        max_memory=512 * 1024**2,
        logs=LogsConfig(dir="/srv/conf/logs", max_bytes=10_000_000, backups=2),
        depends_on=("db",),
        release=ReleaseConfig(root="/srv/web", keep=3),
        autostart=False,
        deploy=DeployTasksConfig(before=(("bin/migrate", "--check"),), timeout=120.0),
        notify=NotifyConfig(exec=("/usr/local/bin/page",), events=("crash", "fatal"), burst=3),
    )
    assert config.apps["db"].command == ("postgres", "-D", "/var/lib/pg data", "-k", "{{dir}}")
    assert config.start_order() == ["db", "web"]


def test_full_config_sets_every_documented_app_setting() -> None:
    """The full example uses every documented app key, so none can be silently ignored."""
    app_keys = {
        path.split(".")[2]
        for path, _, _ in describe_settings()
        if path.startswith("apps.NAME.") and path.count(".") == 2
    }
    written = {line.split(":")[0].strip() for line in FULL.split("  web:")[1].splitlines()[1:]}
    assert app_keys <= written


def test_per_instance_listen_with_integer_instances() -> None:
    """An integer N gives instances "0".."N-1", each with its own address, unshared."""
    config = parse(
        """\
        apps:
          api:
            command: [api, --name, "{app}.{instance}"]
            instances: 3
            listen:
              0: "127.0.0.1:8001"
              1: "0.0.0.0:8002"
              "2": unix:/run/api.sock
            ready: {exec: "check {instance}"}
        """
    )
    app = config.apps["api"]
    assert app.instances == ("0", "1", "2")
    assert app.listen == {
        "0": ListenAddress("127.0.0.1:8001", host="127.0.0.1", port=8001),
        "1": ListenAddress("0.0.0.0:8002", host="0.0.0.0", port=8002),
        "2": ListenAddress("unix:/run/api.sock", path="/run/api.sock"),
    }
    assert not app.listen_shared
    assert app.listen_for("2") == ListenAddress("unix:/run/api.sock", path="/run/api.sock")
    assert app.ready.exec == ("check", "{instance}")
    # A unix socket among the addresses means no tcp default: {port} has no value there.
    assert app.ready.tcp is None


def test_minimal_app_gets_every_default() -> None:
    """An app with only a command equals AppConfig's own defaults (delay-based readiness)."""
    config = parse(
        """\
        apps:
          worker: {command: ./worker}
        """
    )
    assert config.apps == {"worker": AppConfig(name="worker", command=("./worker",))}
    assert config.apps["worker"].instances == DEFAULT_INSTANCES
    assert config.apps["worker"].ready == ReadyConfig(delay=1.0)
    assert config.supervisor == SupervisorConfig()


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "~\n", "supervisor:\napps:\n"])
def test_empty_config_means_defaults_and_no_apps(text: str) -> None:
    """An empty file, or empty sections, give the default supervisor and no apps."""
    assert parse(text) == Config(SupervisorConfig(), {}, CONFIG_FILE)


@pytest.mark.parametrize(
    ("listen", "ready", "expected"),
    [
        ('"127.0.0.1:8000"', "", ReadyConfig(tcp="{host}:{port}")),
        ('"127.0.0.1:8000"', "ready: {timeout: 5}", ReadyConfig(tcp="{host}:{port}", timeout=5)),
        ('"127.0.0.1:8000"', "ready: {notify: false}", ReadyConfig(tcp="{host}:{port}")),
        ('"127.0.0.1:8000"', "ready: {notify: true}", ReadyConfig(notify=True)),
        ('"127.0.0.1:8000"', "ready: {delay: 0}", ReadyConfig(delay=0.0)),
        ('"unix:/run/web.sock"', "", ReadyConfig(delay=1.0)),
        ("null", "ready:", ReadyConfig(delay=1.0)),
    ],
)
def test_ready_default_depends_on_listen(listen: str, ready: str, expected: ReadyConfig) -> None:
    """Without a readiness criterion, TCP listeners get a tcp check, others a 1 s delay."""
    config = parse(f"apps:\n  web:\n    command: web\n    listen: {listen}\n    {ready}\n")
    assert config.apps["web"].ready == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ('"100B"', 100),
        ('"1KB"', 1000),
        ('"2 MB"', 2_000_000),
        ('"1GB"', 10**9),
        ('"1KiB"', 1024),
        ('"1.5MiB"', 1536 * 1024),
        ('"3GiB"', 3 * 1024**3),
        ('"8K"', 8192),
        ('"64m"', 64 * 1024**2),
        ('"1G"', 1024**3),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    """Sizes are bytes, decimal KB/MB/GB, or binary KiB/MiB/GiB and K/M/G."""
    config = parse(f"apps:\n  web:\n    command: web\n    max_memory: {text}\n")
    assert config.apps["web"].max_memory == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TERM", signal.SIGTERM),
        ("SIGHUP", signal.SIGHUP),
        ("quit", signal.SIGQUIT),
        ("9", signal.SIGKILL),
    ],
)
def test_signals(text: str, expected: signal.Signals) -> None:
    """Signals are names with or without SIG, in any case, or numbers."""
    config = parse(f"apps:\n  web:\n    command: web\n    stop: {{signal: {text}}}\n")
    assert config.apps["web"].stop.signal == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [('"0600"', 0o600), ('"660"', 0o660), ('"0o700"', 0o700), ("0600", 0o600), ("0", 0)],
)
def test_octal_modes(text: str, expected: int) -> None:
    """Modes are octal strings, or unquoted octal ints as YAML reads them."""
    config = parse(f"supervisor:\n  control_socket: {{mode: {text}}}\n")
    assert config.supervisor.control_socket.mode == expected


def test_relative_paths_are_resolved_against_the_config_directory() -> None:
    """state_dir, logs.dir, release.root and a plain cwd are relative to the file's directory."""
    text = """\
        supervisor: {state_dir: ../run}
        apps:
          web:
            command: web
            cwd: "./a{{b}}"
            logs: {dir: logs}
            release: {root: releases}
          job:
            command: job
            cwd: "sub/{app}"
        """
    config = parse(text, "/srv/{conf}/sup.yaml")
    assert config.supervisor.state_dir == "/srv/run"
    web = config.apps["web"]
    assert (web.cwd, web.logs.dir) == ("/srv/{{conf}}/a{{b}}", "/srv/{conf}/logs")
    assert web.release == ReleaseConfig(root="/srv/{conf}/releases")
    assert config.apps["job"].cwd == "sub/{app}"
    # A pseudo file name has no directory: paths stay as written.
    assert parse(text, "<config>").supervisor.state_dir == "../run"


def test_http_null_disables_the_api_and_frees_its_address() -> None:
    """`http: null` disables the HTTP API, so an app may listen on its default address."""
    config = parse(
        """\
        supervisor: {http: null}
        apps:
          web: {command: web, listen: "127.0.0.1:9190"}
        """
    )
    assert config.supervisor.http == HttpConfig(listen=None)
    assert config.apps["web"].listen["primary"].port == 9190


def test_anchors_and_merge_keys() -> None:
    """Aliases and `<<` merges work; explicit keys override merged ones."""
    config = parse(
        """\
        apps:
          web: &base
            command: [web, "{instance}"]
            stop: {signal: INT, timeout: 5}
            env: {A: "1"}
          web2:
            <<: *base
            env: {B: "2"}
        """
    )
    assert config.apps["web2"].command == ("web", "{instance}")
    assert config.apps["web2"].stop == StopConfig(signal.SIGINT, 5.0)
    assert config.apps["web2"].env == {"B": "2"}


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    """load_config parses a file and resolves relative paths against its directory."""
    path = tmp_path / "sup.yaml"
    path.write_text("supervisor: {state_dir: state}\napps: {}\n")
    config = load_config(path)
    assert config.supervisor.state_dir == str(tmp_path / "state")
    assert config.path == str(path)


def test_load_config_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the file."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.file == str(missing)
    assert "cannot read config" in str(info.value)


def test_load_config_of_a_binary_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00apps")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_error_text_names_file_line_and_path() -> None:
    """str() of the error reads `file:line: path: message`, as the daemon prints it."""
    error = parse_error(
        """\
        apps:
          web:
            command: web
            stop:
              timeout: 0
        """
    )
    assert str(error) == (
        f"{CONFIG_FILE}:5: apps.web.stop.timeout: must be a positive number of seconds, not 0"
    )


# --- errors ----------------------------------------------------------------------------
# Each case: YAML, the key path of the error, its line, a fragment of its message.

SYNTAX_AND_KEYS = [
    pytest.param(
        """\
        apps:
          web: [a, b
        """,
        None,
        3,
        "invalid YAML",
        id="yaml-syntax",
    ),
    pytest.param("apps:\n\tweb: {}\n", None, 2, "invalid YAML", id="yaml-tab"),
    pytest.param(
        """\
        apps: {}
        ---
        apps: {}
        """,
        None,
        2,
        "expected a single document in the stream, but found another document",
        id="two-documents",
    ),
    pytest.param(
        """\
        - apps
        """,
        None,
        1,
        "must be a mapping",
        id="top-level-list",
    ),
    pytest.param(
        """\
        aps: {}
        """,
        "aps",
        1,
        "unknown key (expected one of: supervisor, apps)",
        id="top-unknown",
    ),
    pytest.param(
        """\
        apps:
          web: {command: a}
          web: {command: b}
        """,
        "apps.web",
        3,
        "duplicate key (first given on line 2)",
        id="duplicate-app",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop:
              signal: TERM
              signal: INT
        """,
        "apps.web.stop.signal",
        6,
        "duplicate key",
        id="duplicate-nested",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop:
              sigal: TERM
        """,
        "apps.web.stop.sigal",
        5,
        "unknown key (expected one of: signal, timeout)",
        id="unknown-nested",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            comand: b
        """,
        "apps.web.comand",
        4,
        "unknown key (expected one of: command, cwd, env",
        id="unknown-app-key",
    ),
    pytest.param(
        """\
        apps:
          ? [a]
          : {}
        """,
        "apps",
        2,
        "keys must be plain strings",
        id="complex-key",
    ),
    pytest.param(
        """\
        apps: [web]
        """,
        "apps",
        1,
        "must be a mapping, not a list",
        id="apps-list",
    ),
    pytest.param(
        """\
        supervisor: yes
        """,
        "supervisor",
        1,
        "must be a mapping",
        id="supervisor-bool",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            <<: [1]
        """,
        "apps.web.<<",
        4,
        "mapping",
        id="merge-scalar",
    ),
]

NAMES = [
    pytest.param(
        """\
        apps:
          "web:1": {command: a}
        """,
        "apps.web:1",
        2,
        "invalid app name 'web:1'",
        id="app-name",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            instances:
              - primary
              - back up
        """,
        "apps.web.instances[1]",
        6,
        "invalid instance name 'back up'",
        id="instance-name",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            instances:
              - b
              - b
        """,
        "apps.web.instances[1]",
        6,
        "duplicate instance 'b' (first on line 5)",
        id="instance-duplicate",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            instances: 0
        """,
        "apps.web.instances",
        4,
        ">= 1",
        id="instances-zero",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            instances: []
        """,
        "apps.web.instances",
        4,
        "must not be empty",
        id="instances-empty",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            instances: {a: 1}
        """,
        "apps.web.instances",
        4,
        "must be a list of instance names or a number of instances, not a mapping",
        id="instances-type",
    ),
]

COMMANDS = [
    pytest.param(
        """\
        apps:
          web:
            cwd: /
        """,
        "apps.web",
        2,
        "missing required key 'command'",
        id="command-missing",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: []
        """,
        "apps.web.command",
        3,
        "must not be empty",
        id="command-empty-list",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: ''
        """,
        "apps.web.command",
        3,
        "must not be empty",
        id="command-empty-string",
    ),
    pytest.param(
        """\
        apps:
          web:
            command:
        """,
        "apps.web.command",
        3,
        "not null",
        id="command-null",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: "run 'x"
        """,
        "apps.web.command",
        3,
        "cannot split the command line: No closing quotation",
        id="command-quote",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: {a: b}
        """,
        "apps.web.command",
        3,
        "not a mapping",
        id="command-type",
    ),
    pytest.param(
        """\
        apps:
          web:
            command:
              - run
              - [x]
        """,
        "apps.web.command[1]",
        5,
        "must be a string, not a list",
        id="command-item",
    ),
]

LISTEN = [
    pytest.param(
        """\
        apps:
          web:
            command: a
            instances: [p, b]
            listen:
              p: '127.0.0.1:1'
              x: '127.0.0.1:2'
        """,
        "apps.web.listen.x",
        7,
        "unknown instance 'x' (instances: p, b)",
        id="listen-unknown-instance",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            instances: [p, b]
            listen:
              p: '127.0.0.1:1'
        """,
        "apps.web.listen",
        5,
        "no address for instance 'b'",
        id="listen-missing-instance",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            listen: [x]
        """,
        "apps.web.listen",
        4,
        "must be an address or a mapping",
        id="listen-type",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            listen: 8000
        """,
        "apps.web.listen",
        4,
        "not an integer (8000)",
        id="listen-int",
    ),
    *[
        pytest.param(
            f"""\
            apps:
              web:
                command: a
                listen: '{address}'
            """,
            "apps.web.listen",
            4,
            fragment,
            id=f"address-{address}",
        )
        for address, fragment in [
            ("example.com:80", "must be an IP address or 'localhost'"),
            ("127.0.0.1:0", "port must be a number from 1 to 65535"),
            ("127.0.0.1:65536", "port must be a number from 1 to 65535"),
            ("127.0.0.1:http", "port must be a number"),
            ("127.0.0.1", 'expected "host:port"'),
            ("::1:80", "IPv6 address in brackets"),
            ("[127.0.0.1]:80", "brackets go around IPv6 addresses only"),
            ("unix:run/web.sock", "must be absolute"),
            ("unix:/" + "x" * 120, "at most 107 bytes"),
        ]
    ],
    pytest.param(
        """\
        apps:
          a:
            command: a
            listen: '127.0.0.1:8000'
          b:
            command: b
            listen: 'localhost:8000'
        """,
        "apps.b.listen",
        7,
        "address localhost:8000 is already used by apps.a.listen (line 4)",
        id="address-two-apps",
    ),
    pytest.param(
        """\
        apps:
          a:
            command: a
            instances: [p, b]
            listen: {p: 'unix:/run/a', b: 'unix:/run//a'}
        """,
        "apps.a.listen.b",
        5,
        "already used by apps.a.listen.p (line 5)",
        id="address-two-instances",
    ),
    pytest.param(
        """\
        supervisor:
          http:
            listen: '[::1]:9000'
        apps:
          a:
            command: a
            listen: '[0::1]:9000'
        """,
        "apps.a.listen",
        7,
        "already used by supervisor.http.listen (line 3)",
        id="address-http",
    ),
    pytest.param(
        """\
        apps:
          a:
            command: a
            listen: '127.0.0.1:9190'
        """,
        "apps.a.listen",
        4,
        "already used by supervisor.http.listen (its default)",
        id="address-default-http",
    ),
    pytest.param(
        """\
        supervisor:
          http: {listen: ':80'}
        """,
        "supervisor.http.listen",
        2,
        "invalid address ':80'",
        id="http-listen",
    ),
]

NUMBERS = [
    pytest.param(
        """\
        supervisor:
          control_socket: {mode: '0800'}
        """,
        "supervisor.control_socket.mode",
        2,
        'octal mode like "0600"',
        id="mode-digit",
    ),
    pytest.param(
        """\
        supervisor:
          control_socket: {mode: 600}
        """,
        "supervisor.control_socket.mode",
        2,
        "quote it",
        id="mode-decimal",
    ),
    pytest.param(
        """\
        supervisor:
          control_socket: {mode: '1777'}
        """,
        "supervisor.control_socket.mode",
        2,
        "must be an octal mode from 000 to 777, not 1777",
        id="mode-range",
    ),
    pytest.param(
        """\
        supervisor:
          control_socket: {mode: true}
        """,
        "supervisor.control_socket.mode",
        2,
        "not a bool (true)",
        id="mode-bool",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            umask: 22
        """,
        "apps.web.umask",
        4,
        'octal umask like "022"',
        id="umask-decimal",
    ),
    pytest.param(
        """\
        supervisor:
          shutdown_timeout: soon
        """,
        "supervisor.shutdown_timeout",
        2,
        "must be a positive number of seconds, not a string ('soon')",
        id="shutdown-type",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop: {timeout: -1}
        """,
        "apps.web.stop.timeout",
        4,
        "must be a positive number of seconds",
        id="stop-timeout",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop: {timeout: .inf}
        """,
        "apps.web.stop.timeout",
        4,
        "must be a positive number of seconds",
        id="stop-timeout-inf",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop: {timeout: }
        """,
        "apps.web.stop.timeout",
        4,
        "not null",
        id="stop-timeout-null",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            watchdog: 0
        """,
        "apps.web.watchdog",
        4,
        "must be a positive number of seconds",
        id="watchdog",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            ready: {timeout: 0}
        """,
        "apps.web.ready.timeout",
        4,
        "positive",
        id="ready-timeout",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            ready: {delay: -0.5}
        """,
        "apps.web.ready.delay",
        4,
        "must be a number of seconds >= 0",
        id="ready-delay",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            ready: {delay: 5, timeout: 5}
        """,
        "apps.web.ready.delay",
        4,
        "must be less than ready.timeout (5)",
        id="ready-delay-timeout",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            ready: {timeout: 0.5}
        """,
        "apps.web.ready.timeout",
        4,
        "more than the default ready.delay (1)",
        id="ready-timeout-default-delay",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {exec: x, interval: 0}
        """,
        "apps.web.health.interval",
        4,
        "positive",
        id="health-interval",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {exec: x, timeout: 0}
        """,
        "apps.web.health.timeout",
        4,
        "positive",
        id="health-timeout",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {exec: x, failures: 0}
        """,
        "apps.web.health.failures",
        4,
        "must be an integer >= 1, not 0",
        id="health-failures",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {exec: x, failures: 1.5}
        """,
        "apps.web.health.failures",
        4,
        "not a number (1.5)",
        id="health-failures-float",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            backoff: {initial: -1}
        """,
        "apps.web.backoff.initial",
        4,
        ">= 0",
        id="backoff-initial",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            backoff:
              initial: 5
              max: 2
        """,
        "apps.web.backoff.max",
        6,
        "must be >= backoff.initial (5)",
        id="backoff-max",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            backoff: {initial: 40}
        """,
        "apps.web.backoff.initial",
        4,
        "must be <= backoff.max (default 30)",
        id="backoff-initial-over-default-max",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            backoff: {reset_after: 0}
        """,
        "apps.web.backoff.reset_after",
        4,
        "positive",
        id="backoff-reset",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            backoff: {max_retries: -1}
        """,
        "apps.web.backoff.max_retries",
        4,
        ">= 0",
        id="max-retries",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            release: {root: /r, keep: -1}
        """,
        "apps.web.release.keep",
        4,
        ">= 0",
        id="release-keep",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            logs: {backups: many}
        """,
        "apps.web.logs.backups",
        4,
        "must be an integer >= 0",
        id="logs-backups",
    ),
]

SIZES_AND_SIGNALS = [
    *[
        pytest.param(
            f"""\
            apps:
              web:
                command: a
                max_memory: {text}
            """,
            "apps.web.max_memory",
            4,
            fragment,
            id=f"size-{text}",
        )
        for text, fragment in [
            ("12XB", "must be a size in bytes like 50MiB"),
            ("0", "must be more than 0 bytes"),
            ("'0KB'", "must be more than 0 bytes"),
            ("-5MB", "must be a size in bytes"),
            ("1.5", "not a number (1.5)"),
        ]
    ],
    pytest.param(
        """\
        apps:
          web:
            command: a
            logs: {max_bytes: lots}
        """,
        "apps.web.logs.max_bytes",
        4,
        "must be a size",
        id="logs-max-bytes",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop: {signal: TREM}
        """,
        "apps.web.stop.signal",
        4,
        "unknown signal name 'TREM'",
        id="signal-name",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop: {signal: 0}
        """,
        "apps.web.stop.signal",
        4,
        "unknown signal number 0",
        id="signal-zero",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop: {signal: 999}
        """,
        "apps.web.stop.signal",
        4,
        "unknown signal number 999",
        id="signal-number",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            stop: {signal: [TERM]}
        """,
        "apps.web.stop.signal",
        4,
        "not a list",
        id="signal-type",
    ),
]

CHOICES = [
    pytest.param(
        """\
        apps:
          web:
            command: a
            restart: sometimes
        """,
        "apps.web.restart",
        4,
        "must be one of: always, on-failure, never",
        id="restart",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            restart: no
        """,
        "apps.web.restart",
        4,
        "not a bool (no)",
        id="restart-bool",
    ),
    pytest.param(
        """\
        supervisor:
          log: {format: yaml}
        """,
        "supervisor.log.format",
        2,
        "must be one of: auto, json, console",
        id="log-format",
    ),
    pytest.param(
        """\
        supervisor:
          log: {level: INFO}
        """,
        "supervisor.log.level",
        2,
        "must be one of: debug, info, warning, error",
        id="log-level",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            reload: stop-start
        """,
        "apps.web.reload",
        4,
        'must be "swap", "restart" or a mapping',
        id="reload-string",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            socket_activation: stdin
        """,
        "apps.web.socket_activation",
        4,
        '"stdin" needs a listen address',
        id="socket-stdin-no-listen",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            listen: null
            socket_activation: stdin
        """,
        "apps.web.socket_activation",
        5,
        '"stdin" needs a listen address',
        id="socket-stdin-listen-null",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            listen: 127.0.0.1:8000
            socket_activation: inetd
        """,
        "apps.web.socket_activation",
        5,
        'must be true, false or "stdin"',
        id="socket-activation-string",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            reload:
              signal: USR2
        """,
        "apps.web.reload",
        4,
        "missing required key 'pidfile'",
        id="reload-pidfile",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            reload: {pidfile: /p}
        """,
        "apps.web.reload",
        4,
        "missing required key 'signal'",
        id="reload-signal",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            autostart: 'yes'
        """,
        "apps.web.autostart",
        4,
        "must be true or false, not a string ('yes')",
        id="autostart",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            socket_activation: 1
        """,
        "apps.web.socket_activation",
        4,
        'must be true, false or "stdin", not an integer (1)',
        id="socket-activation",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            ready: {notify: 'true'}
        """,
        "apps.web.ready.notify",
        4,
        "must be true or false",
        id="notify",
    ),
]

CHECKS = [
    pytest.param(
        """\
        apps:
          web:
            command: a
            listen: '127.0.0.1:80'
            ready:
              http: 'http://{host}:{port}/'
              tcp: '{host}:{port}'
        """,
        "apps.web.ready.tcp",
        7,
        "only one of http, tcp, exec may be set (apps.web.ready.http is on line 6)",
        id="ready-two",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health:
              interval: 3
        """,
        "apps.web.health",
        4,
        "must set exactly one of: http, tcp, exec",
        id="health-none",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {exec: a, tcp: 'localhost:1'}
        """,
        "apps.web.health.tcp",
        4,
        "only one of http, tcp, exec may be set (apps.web.health.exec is on line 4)",
        id="health-two",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {http: 'https://x/'}
        """,
        "apps.web.health.http",
        4,
        'must be a URL starting with "http://"',
        id="http-scheme",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {tcp: 'localhost'}
        """,
        "apps.web.health.tcp",
        4,
        'must be "host:port"',
        id="tcp-shape",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {exec: []}
        """,
        "apps.web.health.exec",
        4,
        "must not be empty",
        id="exec-empty",
    ),
]

PLACEHOLDER_CASES = [
    pytest.param(
        """\
        apps:
          web:
            command: 'run {hots}'
        """,
        "apps.web.command",
        3,
        "unknown placeholder {hots} (expected one of: app, instance",
        id="unknown",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: [run, '{app:>10}']
        """,
        "apps.web.command[1]",
        3,
        "cannot have a format spec or conversion",
        id="format-spec",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: [run, '{app!r}']
        """,
        "apps.web.command[1]",
        3,
        "cannot have a format spec or conversion",
        id="conversion",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: [run, '{}']
        """,
        "apps.web.command[1]",
        3,
        "unknown placeholder {}",
        id="empty",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: [run, '{app']
        """,
        "apps.web.command[1]",
        3,
        "malformed placeholder",
        id="unclosed",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: [run, 'a}b']
        """,
        "apps.web.command[1]",
        3,
        "malformed placeholder",
        id="lone-brace",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            cwd: '/srv/{port}'
        """,
        "apps.web.cwd",
        4,
        "{port} needs a listen address, and this app has none",
        id="port-without-listen",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            env:
              HOST: '{host}'
        """,
        "apps.web.env.HOST",
        5,
        "{host} needs a listen address",
        id="host-in-env",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            listen: 'unix:/run/w'
            env: {PORT: '{port}'}
        """,
        "apps.web.env.PORT",
        5,
        "listens on a unix socket",
        id="port-with-unix",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            cwd: '{release_dir}'
        """,
        "apps.web.cwd",
        4,
        "{release_dir} needs a 'release' setting",
        id="release-dir-without-release",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            health: {http: 'http://x/{release}'}
        """,
        "apps.web.health.http",
        4,
        "{release} needs a 'release' setting",
        id="release-in-check",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            reload: {signal: USR2, pidfile: '/run/{nme}.pid'}
        """,
        "apps.web.reload.pidfile",
        4,
        "unknown placeholder {nme}",
        id="pidfile",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            ready: {exec: 'check {port}'}
        """,
        "apps.web.ready.exec",
        4,
        "{port} needs a listen address",
        id="exec",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            ready: {tcp: '{host}:{port}'}
        """,
        "apps.web.ready.tcp",
        4,
        "{host} needs a listen address",
        id="tcp",
    ),
]

ENV_USERS_DEPS = [
    pytest.param(
        """\
        apps:
          web:
            command: a
            env: {A: }
        """,
        "apps.web.env.A",
        4,
        'must be a string, number or bool (write "" for empty), not null',
        id="env-null",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            env: {A: [1]}
        """,
        "apps.web.env.A",
        4,
        "not a list",
        id="env-list",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            env: {'A=B': x}
        """,
        "apps.web.env.A=B",
        4,
        "invalid environment variable name 'A=B'",
        id="env-name",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            env: [A]
        """,
        "apps.web.env",
        4,
        "must be a mapping, not a list",
        id="env-type",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            user: no-such-user-xq
        """,
        "apps.web.user",
        4,
        "unknown user 'no-such-user-xq'",
        id="user",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            group: no-such-group-xq
        """,
        "apps.web.group",
        4,
        "unknown group 'no-such-group-xq'",
        id="group",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            user: 0
        """,
        "apps.web.user",
        4,
        "must be a non-empty string, not an integer (0)",
        id="user-type",
    ),
    pytest.param(
        """\
        supervisor:
          control_socket: {group: no-such-group-xq}
        """,
        "supervisor.control_socket.group",
        2,
        "unknown group",
        id="socket-group",
    ),
    pytest.param(
        """\
        supervisor:
          state_dir: 7
        """,
        "supervisor.state_dir",
        2,
        "must be a non-empty string, not an integer (7)",
        id="state-dir",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            depends_on: [db]
        """,
        "apps.web.depends_on[0]",
        4,
        "unknown app 'db' (apps: web)",
        id="depends-unknown",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            depends_on: [web]
        """,
        "apps.web.depends_on[0]",
        4,
        "an app cannot depend on itself",
        id="depends-self",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            depends_on: db
        """,
        "apps.web.depends_on",
        4,
        "must be a list of app names, not a string ('db')",
        id="depends-type",
    ),
    pytest.param(
        """\
        apps:
          a: {command: a, depends_on: [b]}
          b: {command: b}
          c: {command: c, depends_on: [b, b]}
        """,
        "apps.c.depends_on[1]",
        4,
        "'b' is listed twice",
        id="depends-twice",
    ),
    pytest.param(
        """\
        apps:
          a:
            command: a
            depends_on: [b]
          b:
            command: b
            depends_on:
              - c
          c:
            command: c
            depends_on: [a]
        """,
        "apps.a.depends_on[0]",
        4,
        "dependency cycle: a -> b -> c -> a",
        id="depends-cycle",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            release: {keep: 2}
        """,
        "apps.web.release",
        4,
        "missing required key 'root'",
        id="release-root",
    ),
    pytest.param(
        """\
        apps:
          web:
            command: a
            release: /srv
        """,
        "apps.web.release",
        4,
        "must be a mapping with keys root, keep",
        id="release-type",
    ),
]


@pytest.mark.parametrize(("text", "path", "line", "fragment"), SYNTAX_AND_KEYS)
def test_syntax_and_key_errors(text: str, path: str | None, line: int, fragment: str) -> None:
    """YAML syntax errors, duplicate, unknown and non-string keys are reported with their line."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), NAMES)
def test_name_errors(text: str, path: str, line: int, fragment: str) -> None:
    """App and instance names are checked, and instance lists must be unique and non-empty."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), COMMANDS)
def test_command_errors(text: str, path: str, line: int, fragment: str) -> None:
    """A command is required, non-empty, splittable and made of strings."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), LISTEN)
def test_listen_errors(text: str, path: str, line: int, fragment: str) -> None:
    """Addresses are well formed, cover every instance and are never used twice."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), NUMBERS)
def test_number_errors(text: str, path: str, line: int, fragment: str) -> None:
    """Modes, durations and counts are range-checked and typed."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), SIZES_AND_SIGNALS)
def test_size_and_signal_errors(text: str, path: str, line: int, fragment: str) -> None:
    """Sizes need a known unit and must be positive; signals must exist."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), CHOICES)
def test_choice_and_bool_errors(text: str, path: str, line: int, fragment: str) -> None:
    """Enumerated settings list their choices; bools must be real YAML bools."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), CHECKS)
def test_check_errors(text: str, path: str, line: int, fragment: str) -> None:
    """Ready allows at most one probe, health exactly one, and probes are well formed."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), PLACEHOLDER_CASES)
def test_placeholder_errors(text: str, path: str, line: int, fragment: str) -> None:
    """Placeholders must be known, plain, well formed and fillable for the app."""
    assert_error(text, path, line, fragment)


@pytest.mark.parametrize(("text", "path", "line", "fragment"), ENV_USERS_DEPS)
def test_env_user_dependency_and_release_errors(
    text: str, path: str, line: int, fragment: str
) -> None:
    """Env values are scalars, users/groups exist, dependencies are known and acyclic."""
    assert_error(text, path, line, fragment)


def test_unreadable_character_is_reported_with_its_line() -> None:
    """A control character the YAML reader refuses is a ConfigError on its line."""
    error = parse_error("apps: {}\nsupervisor:\n  state_dir: a\x07b\n")
    assert (error.line, error.path) == (3, None)
    assert "unacceptable character #x0007" in error.reason


# --------------------------------------------------------------------------- reload modes


def _web(extra: str) -> AppConfig:
    text = "apps:\n  web:\n    command: a\n    listen: 127.0.0.1:8000\n" + extra
    return parse_config(text).apps["web"]


def test_reload_restart_and_its_default_with_socket_activation_false() -> None:
    """`reload: restart` is stop-then-start; socket_activation: false makes it the default
    (the app binds its own port: a new generation beside the old one could not), unless
    the app says how it reloads."""
    assert _web("").reload.is_swap and not _web("").reload.restart
    assert _web("    reload: restart\n").reload.restart
    own_port = _web("    socket_activation: false\n").reload
    assert own_port.restart and not own_port.is_swap
    assert own_port.method == "restart (stop-then-start)"
    assert _web("    socket_activation: false\n    reload: swap\n").reload.is_swap
    reexec = _web("    socket_activation: false\n    reload: {signal: USR2, pidfile: /p}\n")
    assert not reexec.reload.restart and reexec.reload.signal is not None


def test_socket_activation_stdin_per_instance_listen_is_one_socket_each() -> None:
    """Each instance gets exactly one socket from a per-instance listen map: accepted."""
    text = (
        "apps:\n  web:\n    command: a\n    instances: [primary, backup]\n"
        "    listen: {primary: 127.0.0.1:8000, backup: 127.0.0.1:8001}\n"
        "    socket_activation: stdin\n"
    )
    app = parse_config(text).apps["web"]
    assert app.socket_on_stdin and app.reload.is_swap
