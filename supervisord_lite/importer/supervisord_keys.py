"""What each key of a supervisord ``[program:x]`` becomes: one handler per key.

:class:`Program` is one program being turned into an app: its values expanded the
way supervisord expands them (``%(process_num)s`` kept apart, to become
``{instance}``), read as supervisord reads them (booleans, sizes, its
``KEY=val,KEY2="a,b"`` environment), each key reported once. :data:`KEYS` maps each
key supervisord knows to its handler: mapped, approximated (what differs) or not
mapped (why, and what to use instead).
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Callable

from ..config.values import parse_signal
from .emit import ImportedApp, app_name, literal
from .report import Report, Where
from .supervisord_read import MARK, Option, Section, env_names, expand

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_SIZE_UNITS = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
_DEFAULT_PRIORITY = 999
_NUM_TOKEN = "PROCESSNUM0PLACEHOLDER"  # a word shlex keeps whole, for %(process_num)
_EVENTS = "event listeners are not supported: poll GET /events, or alert on /metrics"
SECTIONS_NOT_MAPPED = {
    "eventlistener": _EVENTS + " (see contrib/prometheus)",
    "fcgi-program": "no FastCGI socket manager: run the FastCGI server as a [program] that "
    "binds its own socket, or give it listen: if it takes its socket as LISTEN_FDS",
    "rpcinterface": "no XML-RPC: use supctl --json or the HTTP API (/status, /events)",
    "unix_http_server": "the control socket is supervisor.control_socket (mode, group)",
    "inet_http_server": "the read-only HTTP API is supervisor.http.listen; control is "
    "local only (supctl)",
    "supervisorctl": "use supctl (-s SOCKET)",
}
# [supervisord] keys whose nearest equivalent is one of ours
DAEMON_KEYS = {
    "logfile": "supervisor.log (the daemon logs to stderr, e.g. the journal)",
    "loglevel": "supervisor.log.level",
    "pidfile": "the pidfile is in supervisor.state_dir",
    "minfds": "set LimitNOFILE= in the daemon's systemd unit",
    "nodaemon": "the daemon always runs in the foreground",
}


class Program:
    """One [program:x] being turned into an app."""

    def __init__(self, section: Section, group: str, report: Report, env: dict[str, str]):
        self.section = section
        self.report = report
        self.name = section.name.split(":", 1)[1]
        self.subject = f"[program:{self.name}]"
        name = app_name(self.name, section.where, report, self.subject)
        self.app = ImportedApp(name, section.where, self.subject)
        self.expansions = {
            "program_name": self.name,
            "group_name": group,
            "host_node_name": socket.gethostname(),
        }
        self.env = dict(env)
        self.conversions: set[str] = set()
        self.priority = _DEFAULT_PRIORITY
        self.noted: set[tuple[str, str]] = set()

    def value(self, key: str) -> str:
        option = self.section.options[key]
        expansions = {**self.expansions, "here": option.here}
        if key != "numprocs":
            expansions["numprocs"] = self.section.options.get(
                "numprocs", Option("1", option.where, option.here)
            ).value
        for name in env_names(option):
            if (key, name) not in self.noted and name in os.environ:
                self.noted.add((key, name))
                self.approx(
                    key,
                    "the value",
                    f"%(ENV_{name})s was expanded from this "
                    "import's environment; supervisord expands it when it starts",
                )
        text = expand(option, expansions)
        self.conversions.update(text.split(MARK)[1::2])
        return text

    def template(self, key: str) -> str:
        """The value as a setting taking placeholders: process_num -> {instance}."""
        parts = self.value(key).split(MARK)
        return "".join(literal(p) if i % 2 == 0 else "{instance}" for i, p in enumerate(parts))

    def where(self, key: str) -> Where:
        return self.section.options[key].where

    def subject_of(self, key: str) -> str:
        value = self.section.options[key].value.replace("\n", " ")
        return f"{self.subject} {key}={value}"

    def mapped(self, key: str, to: str) -> None:
        self.report.mapped(self.where(key), self.subject_of(key), to)

    def approx(self, key: str, to: str, differs: str) -> None:
        self.report.approximated(self.where(key), self.subject_of(key), to, differs)

    def not_mapped(self, key: str, why: str) -> None:
        self.report.not_mapped(self.where(key), self.subject_of(key), why)

    def default(self, key: str, value: str, to: str) -> None:
        """A supervisord default that is not ours, written out."""
        self.report.mapped(self.section.where, f"{self.subject} {key} (default {value})", to)

    # typed values ---------------------------------------------------------------------

    def boolean(self, key: str) -> bool:
        text = self.value(key).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise self.where(key).error(f"{key}: not a boolean: {text!r} (true or false)")

    def integer(self, key: str, minimum: int = 0) -> int:
        text = self.value(key).strip()
        if not text.isdigit() or int(text) < minimum:
            raise self.where(key).error(f"{key}: not an integer >= {minimum}: {text!r}")
        return int(text)

    def size(self, key: str) -> int:
        text = self.value(key).strip().lower()
        unit = _SIZE_UNITS.get(text[-2:], 1)
        number = text[:-2] if unit > 1 else text
        if not number.isdigit():
            raise self.where(key).error(f"{key}: not a size: {text!r} (e.g. 50MB)")
        return int(number) * unit


def _command(p: Program, key: str) -> None:
    try:
        argv = shlex.split(p.template(key))
    except ValueError as exc:
        raise p.where(key).error(f"command: cannot split it: {exc}") from None
    if not argv:
        raise p.where(key).error("command is empty")
    p.app.set("command", shlex.join(argv))
    p.mapped(key, "command")


def _directory(p: Program, key: str) -> None:
    p.app.set("cwd", p.template(key))
    p.mapped(key, "cwd")


def _user(p: Program, key: str) -> None:
    p.app.set("user", p.value(key).strip())
    p.mapped(key, "user")


def _umask(p: Program, key: str) -> None:
    text = p.value(key).strip()
    try:
        p.app.set("umask", format(int(text, 8), "03o"))
    except ValueError:
        raise p.where(key).error(f"umask: not an octal number: {text!r}") from None
    p.mapped(key, "umask")


def _environment(p: Program, key: str) -> None:
    parts = p.value(key).split(MARK)
    marked = "".join(part if i % 2 == 0 else _NUM_TOKEN for i, part in enumerate(parts))
    for name, value in key_value_pairs(marked, p.where(key)).items():
        p.env[name] = literal(value).replace(_NUM_TOKEN, "{instance}")
    p.mapped(key, "env")


def key_value_pairs(text: str, where: Where) -> dict[str, str]:
    """supervisord's own parse of KEY=val,KEY2="a,b" (its dict_of_key_value_pairs)."""
    lexer = shlex.shlex(text)
    lexer.wordchars += "/.+-():"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise where.error(f"environment: {exc}") from None
    pairs: dict[str, str] = {}
    for i in range(0, len(tokens), 4):
        key_eq_value = tokens[i : i + 3]
        if len(key_eq_value) != 3 or key_eq_value[1] != "=":
            raise where.error(f"environment: expected KEY=value,... in {text!r}")
        pairs[key_eq_value[0]] = key_eq_value[2].strip("'\"")
    return pairs


def _autostart(p: Program, key: str) -> None:
    p.app.set("autostart", p.boolean(key))
    p.mapped(key, "autostart")


def _autorestart(p: Program, key: str) -> None:
    text = p.value(key).strip().lower()
    if text == "unexpected":
        p.app.set("restart", "on-failure")
        p.mapped(key, "restart: on-failure (exit status not 0, or killed)")
    else:
        p.app.set("restart", "always" if p.boolean(key) else "never")
        p.mapped(key, f"restart: {p.app.get('restart')}")


def _exitcodes(p: Program, key: str) -> None:
    codes = {c.strip() for c in p.value(key).split(",") if c.strip()}
    if codes == {"0"}:
        p.mapped(key, "restart: on-failure's expected exit (0)")
    else:
        p.not_mapped(key, "only exit status 0 counts as expected here (restart: on-failure)")


def _startsecs(p: Program, key: str) -> None:
    seconds = p.integer(key)
    p.app.set("ready.delay", seconds)
    if seconds >= 60:
        p.app.set("ready.timeout", seconds + 30)
    p.approx(
        key,
        "ready.delay",
        "readiness also gates reload and deploy; give the app "
        "ready.http (a health URL) or ready.tcp where it has one",
    )


def _startretries(p: Program, key: str) -> None:
    p.app.set("backoff.max_retries", p.integer(key))
    p.mapped(key, "backoff.max_retries")


def _stopsignal(p: Program, key: str) -> None:
    text = p.value(key).strip()
    try:
        p.app.set("stop.signal", parse_signal(text).name.removeprefix("SIG"))
    except ValueError:
        raise p.where(key).error(f"stopsignal: unknown signal {text!r}") from None
    p.mapped(key, "stop.signal")


def _stopwaitsecs(p: Program, key: str) -> None:
    seconds = p.integer(key, 1)
    p.app.set("stop.timeout", seconds)
    p.mapped(key, "stop.timeout")


def _asgroup(p: Program, key: str) -> None:
    if p.boolean(key):
        p.mapped(key, "stop (the signal and SIGKILL always go to the process group)")
    else:
        p.approx(key, "stop", "the stop signal and SIGKILL go to the whole process group here")


def _logfile(p: Program, key: str) -> None:
    text = p.template(key).strip()
    if text.upper() == "AUTO":
        p.mapped(key, "logs (captured under STATE_DIR/logs)")
    elif text.upper() == "NONE" or text.lower() == "syslog":
        p.not_mapped(key, "output is always captured, to logs.dir/APP.INSTANCE.log")
    elif key.startswith("stderr") and p.app.get("logs.dir") is not None:
        p.approx(key, "logs.dir", "stderr goes to the same file as stdout")
    else:
        p.app.set("logs.dir", os.path.dirname(text) or ".")
        p.approx(
            key,
            "logs.dir",
            "written as APP.INSTANCE.log in that directory, stdout and stderr together",
        )


def _redirect_stderr(p: Program, key: str) -> None:
    if p.boolean(key):
        p.mapped(key, "logs (stdout and stderr in one file)")
    else:
        p.approx(key, "logs", "stdout and stderr are captured in one file here")


def _maxbytes(p: Program, key: str) -> None:
    size = p.size(key)
    if size == 0:
        p.not_mapped(key, "logs always rotate: set a large logs.max_bytes")
    elif key.startswith("stderr") and p.app.get("logs.max_bytes") not in (None, size):
        p.approx(key, "logs.max_bytes", "one size for the one log file: stdout's kept")
    else:
        p.app.set("logs.max_bytes", size)
        p.mapped(key, "logs.max_bytes")


def _backups(p: Program, key: str) -> None:
    p.app.set("logs.backups", p.integer(key))
    p.mapped(key, "logs.backups")


def _priority(p: Program, key: str) -> None:
    p.priority = p.integer(key)  # reported with the order, once every program is read


def _numbers(p: Program, key: str) -> None:
    p.integer(key, 1 if key == "numprocs" else 0)  # reported with the instances


def _process_name(p: Program, key: str) -> None:
    p.value(key)  # reported with the instances


def _not_mapped(why: str) -> Callable[[Program, str], None]:
    return lambda p, key: p.not_mapped(key, why)


_Handler = Callable[[Program, str], None]
KEYS: dict[str, _Handler] = {
    "command": _command,
    "directory": _directory,
    "user": _user,
    "umask": _umask,
    "environment": _environment,
    "autostart": _autostart,
    "autorestart": _autorestart,
    "exitcodes": _exitcodes,
    "startsecs": _startsecs,
    "startretries": _startretries,
    "stopsignal": _stopsignal,
    "stopwaitsecs": _stopwaitsecs,
    "stopasgroup": _asgroup,
    "killasgroup": _asgroup,
    "stdout_logfile": _logfile,
    "stderr_logfile": _logfile,
    "redirect_stderr": _redirect_stderr,
    "stdout_logfile_maxbytes": _maxbytes,
    "stderr_logfile_maxbytes": _maxbytes,
    "stdout_logfile_backups": _backups,
    "stderr_logfile_backups": _backups,
    "priority": _priority,
    "numprocs": _numbers,
    "numprocs_start": _numbers,
    "process_name": _process_name,
    "stdout_capture_maxbytes": _not_mapped(_EVENTS),
    "stderr_capture_maxbytes": _not_mapped(_EVENTS),
    "stdout_events_enabled": _not_mapped(_EVENTS),
    "stderr_events_enabled": _not_mapped(_EVENTS),
    "stdout_syslog": _not_mapped("output goes to the app's log file; ship it from there"),
    "stderr_syslog": _not_mapped("output goes to the app's log file; ship it from there"),
    "serverurl": _not_mapped("children talk to the daemon with supctl (its control socket)"),
}
