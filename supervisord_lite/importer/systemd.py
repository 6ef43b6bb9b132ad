"""systemd service units as our apps: one app per unit, named by the unit (``web.service``
-> ``web``; ``web@.service`` -> ``web`` with ``%i`` as ``{instance}``).

Every assignment is reported: the keys of :data:`_SERVICE` and :data:`_UNIT` by their
handlers, ``Limit*``, ``Exec*`` hooks and the rest as not mapped with the reason.
systemd's defaults that differ from ours are written out (``Restart=no`` ->
``restart: never``, ``TimeoutStopSec=90s`` -> ``stop.timeout: 90``). ``After=`` /
``Requires=`` / ``Wants=`` naming another imported unit become ``depends_on``. A unit
with no ``ExecStart=`` is a SourceError (systemd refuses it too).
"""

from __future__ import annotations

from collections.abc import Callable

from .emit import ImportedApp, app_name, literal
from .report import Report, Where
from .systemd_exec import exec_command, kill_signal, names, specifiers
from .systemd_unit import Assignment, Unit, read_unit, split_words, timespan

_DEPENDENCY_KEYS = ("After", "Requires", "Wants", "BindsTo", "Requisite")
_HOOK = "no hooks around a start or stop here: run it in the command (sh -c 'pre && exec app') or before `supctl deploy`"  # noqa: E501
_RESTART = {
    "no": ("never", ""),
    "always": ("always", ""),
    "on-failure": ("on-failure", ""),
    "on-abnormal": ("on-failure", "also restarted after a non-zero exit status"),
    "on-abort": ("on-failure", "also restarted after a non-zero exit status"),
    "on-watchdog": ("on-failure", "also restarted after a non-zero exit status or a signal"),
    "on-success": ("always", "also restarted after a failure"),
}


class _Service:
    def __init__(self, unit: Unit, report: Report) -> None:
        self.unit = unit
        self.report = report
        prefix, _, template = names(unit)
        where = unit.sections.get("Service", Where(unit.path, 1))
        self.app = ImportedApp(app_name(prefix, where, report, unit.file_name), where,
                               unit.file_name)  # fmt: skip
        self.template = template
        self.env: dict[str, str] = {}
        self.deps: list[tuple[Assignment, str]] = []

    def subject(self, a: Assignment) -> str:
        return f"{a.key}={a.value}"

    def mapped(self, a: Assignment, to: str) -> None:
        self.report.mapped(a.where, self.subject(a), to)

    def approx(self, a: Assignment, to: str, differs: str) -> None:
        self.report.approximated(a.where, self.subject(a), to, differs)

    def not_mapped(self, a: Assignment, why: str) -> None:
        self.report.not_mapped(a.where, self.subject(a), why)

    def seconds(self, a: Assignment, key: str) -> None:
        value = timespan(a)
        if not value:
            self.not_mapped(a, f"{key} must be a positive number of seconds here")
        else:
            self.app.set(key, value)
            self.mapped(a, key)


def _exec_start(s: _Service, a: Assignment) -> None:
    command = exec_command(a, s.unit, s.report)
    s.app.set("command", command.text)
    differs = []
    if command.uses_shell:
        differs.append("$VARIABLES are expanded by /bin/sh -c, not by systemd")
    if "-" in command.prefixes:
        differs.append("'-': its exit status is not ignored here")
    if "@" in command.prefixes:
        differs.append("'@': argv[0] is the program itself here")
    if "+" in command.prefixes or "!" in command.prefixes:
        differs.append("'+'/'!': it runs with user:/group: like any app, no extra privileges")
    if differs:
        s.approx(a, "command", "; ".join(differs))
    else:
        s.mapped(a, "command")


def _type(s: _Service, a: Assignment) -> None:
    kind = a.value
    if kind in ("simple", "exec"):
        s.mapped(a, "ready (default: up 1 s)")
    elif kind in ("notify", "notify-reload"):
        s.app.set("ready.notify", True)
        s.mapped(a, "ready.notify: true")
    elif kind == "forking":
        s.approx(a, "ready (default)", "apps must stay in the foreground: give the "
                 "command its no-daemon flag")  # fmt: skip
    elif kind == "oneshot":
        s.app.set("restart", "never")
        s.approx(a, "restart: never", "a one-shot task is not a service: it becomes an app "
                 "that runs once; a deploy's task may suit it better")  # fmt: skip
    else:
        s.approx(a, "ready (default: up 1 s)", f"Type={kind} is started like Type=simple")


def _cwd(s: _Service, a: Assignment) -> None:
    path = specifiers(a, s.unit, s.report).removeprefix("-")
    if path.startswith("~"):
        s.not_mapped(a, "the user's home: write the path")
        return
    s.app.set("cwd", literal(path).replace("INSTANCE0PLACEHOLDER", "{instance}"))
    s.mapped(a, "cwd")


def _plain(key: str) -> Callable[[_Service, Assignment], None]:
    def handle(s: _Service, a: Assignment) -> None:
        s.app.set(key, specifiers(a, s.unit, s.report))
        s.mapped(a, key)

    return handle


def _umask(s: _Service, a: Assignment) -> None:
    try:
        s.app.set("umask", format(int(a.value, 8), "03o"))
    except ValueError:
        raise a.where.error(f"UMask: not an octal number: {a.value!r}") from None
    s.mapped(a, "umask")


def _environment(s: _Service, a: Assignment) -> None:
    for word in split_words(specifiers(a, s.unit, s.report), a.where):
        name, eq, value = word.partition("=")
        if not eq or not name:
            raise a.where.error(f"Environment: {word!r} is not NAME=value")
        s.env[name] = literal(value).replace("INSTANCE0PLACEHOLDER", "{instance}")
    s.mapped(a, "env")


def _restart(s: _Service, a: Assignment) -> None:
    if a.value not in _RESTART:
        raise a.where.error(f"Restart: unknown value {a.value!r}")
    ours, differs = _RESTART[a.value]
    s.app.set("restart", ours)
    if differs:
        s.approx(a, f"restart: {ours}", differs)
    else:
        s.mapped(a, f"restart: {ours}")


def _restart_sec(s: _Service, a: Assignment) -> None:
    value = timespan(a)
    if value is None:
        s.not_mapped(a, "restarts need a finite delay")
        return
    s.app.set("backoff.initial", value)
    s.app.set("backoff.max", value)
    s.approx(a, "backoff.initial and backoff.max", "the first restart after a run longer "
             "than backoff.reset_after is immediate")  # fmt: skip


def _kill_signal(s: _Service, a: Assignment) -> None:
    s.app.set("stop.signal", a.value.removeprefix("SIG"))
    s.mapped(a, "stop.signal")


def _kill_mode(s: _Service, a: Assignment) -> None:
    if a.value == "control-group":
        s.mapped(a, "stop (the whole process group, and the cgroup where delegated)")
    else:
        s.approx(a, "stop", "the stop signal and SIGKILL go to the whole process group")


def _timeout(s: _Service, a: Assignment) -> None:
    keys = {"TimeoutStopSec": ["stop.timeout"], "TimeoutStartSec": ["ready.timeout"]}
    for key in keys.get(a.key, ["ready.timeout", "stop.timeout"]):
        s.seconds(a, key)


def _start_limit(s: _Service, a: Assignment) -> None:
    if not a.value.isdigit():
        raise a.where.error(f"StartLimitBurst: not a number: {a.value!r}")
    s.app.set("backoff.max_retries", int(a.value))
    s.approx(a, "backoff.max_retries", "counts consecutive failed starts, not starts "
             "within StartLimitIntervalSec")  # fmt: skip


def _memory(s: _Service, a: Assignment) -> None:
    if a.value.isdigit() or a.value[:-1].replace(".", "").isdigit():
        s.app.set("max_memory", a.value)
        s.approx(a, "max_memory", "the instance is replaced when its RSS exceeds it; no "
                 "cgroup limit")  # fmt: skip
    else:
        s.not_mapped(a, "max_memory takes a size")


def _description(s: _Service, a: Assignment) -> None:
    s.app.origin = f"{s.unit.file_name}: {a.value}"
    s.mapped(a, "the comment above the app")


def _install(s: _Service, a: Assignment) -> None:
    s.mapped(a, "autostart: true (the daemon starts every app)")


def _dependency(s: _Service, a: Assignment) -> None:
    for name in a.value.split():
        s.deps.append((a, name))


def _not(why: str) -> Callable[[_Service, Assignment], None]:
    return lambda s, a: s.not_mapped(a, why)


_Handler = Callable[[_Service, Assignment], None]
_SERVICE: dict[str, _Handler] = {
    "ExecStart": _exec_start,
    "Type": _type,
    "WorkingDirectory": _cwd,
    "User": _plain("user"),
    "Group": _plain("group"),
    "UMask": _umask,
    "Environment": _environment,
    "Restart": _restart,
    "RestartSec": _restart_sec,
    "TimeoutStopSec": _timeout,
    "TimeoutStartSec": _timeout,
    "TimeoutSec": _timeout,
    "KillSignal": _kill_signal,
    "KillMode": _kill_mode,
    "WatchdogSec": lambda s, a: s.seconds(a, "watchdog"),
    "StartLimitBurst": _start_limit,
    "MemoryMax": _memory,
    "MemoryLimit": _memory,
    "ExecStartPre": _not(_HOOK),
    "ExecStartPost": _not(_HOOK),
    "ExecStop": _not(_HOOK),
    "ExecStopPost": _not(_HOOK),
    "ExecCondition": _not(_HOOK),
    "StandardOutput": _not("output is captured to the app's log (logs.dir), not the journal"),
    "StandardError": _not("output is captured to the app's log (logs.dir), not the journal"),
    "NotifyAccess": _not("READY=1/WATCHDOG=1 are taken from the instance's processes"),
}
_UNIT: dict[str, _Handler] = {
    "Description": _description,
    "Documentation": _not("documentation only"),
    "StartLimitBurst": _start_limit,
    **dict.fromkeys(_DEPENDENCY_KEYS, _dependency),
}
_LIST_KEYS = {"Environment", "EnvironmentFile", "ExecStart", "ExecReload", *_DEPENDENCY_KEYS}


def load(paths: list[str], report: Report) -> list[ImportedApp]:
    """The apps of the ``.service`` units in ``paths`` (others are reported, not mapped)."""
    services: list[_Service] = []
    for path in paths:
        unit = read_unit(path)
        if "Service" not in unit.sections:
            report.not_mapped(
                Where(path, 1), unit.file_name, "only .service units become apps (a .socket's "
                "address is an app's listen:, which the supervisor binds and passes on)",
            )  # fmt: skip
            continue
        services.append(_service(unit, report))
    _dependencies(services, report)
    return [s.app for s in services]


def _service(unit: Unit, report: Report) -> _Service:
    s = _Service(unit, report)
    starts = unit.values("Service", "ExecStart")
    if not starts:
        raise s.app.where.error(
            f"{unit.file_name}: no ExecStart= in [Service] (systemd refuses such a service)"
        )
    kind = unit.last("Service", "Type")
    if len(starts) > 1 and (kind is None or kind.value != "oneshot"):
        raise starts[1].where.error("a second ExecStart= (only Type=oneshot allows several)")
    for a in unit.assignments:
        current = unit.values(a.section, a.key) if a.key in _LIST_KEYS else [
            unit.last(a.section, a.key)
        ]  # fmt: skip
        if a not in current:
            continue  # reset by an empty assignment, or set again later
        _assignment(s, a, starts[0])
    _defaults(s)
    if s.template:
        report.approximated(
            s.app.where, f"{unit.file_name} (a template unit)", "instances",
            "%i is {instance}: list the names it was started with (web@NAME) under "
            "instances: (here the one instance primary)",
        )  # fmt: skip
    if s.env:
        s.app.set("env", s.env)
    _reload(s)
    return s


def _assignment(s: _Service, a: Assignment, first_start: Assignment) -> None:
    if a.section == "Service":
        if a.key == "ExecStart" and a != first_start:
            s.not_mapped(a, "one command per app: make it an app of its own")
        elif a.key == "EnvironmentFile":
            _env_file(s, a)
        elif a.key in ("PIDFile", "ExecReload"):
            pass  # together, in _reload
        elif a.key.startswith("Limit"):
            s.not_mapped(a, "resource limits: set them in the daemon's own unit (apps "
                         "inherit them) or wrap the command with prlimit")  # fmt: skip
        else:
            _SERVICE.get(a.key, _not("no equivalent here"))(s, a)
    elif a.section == "Unit":
        _UNIT.get(a.key, _not("no equivalent here"))(s, a)
    elif a.section == "Install" and a.key in ("WantedBy", "RequiredBy"):
        _install(s, a)
    else:
        s.not_mapped(a, "no equivalent here")


def _env_file(s: _Service, a: Assignment) -> None:
    if s.app.get("env_file") is not None:
        s.not_mapped(a, "one env_file per app here: merge it into the first")
        return
    s.app.set("env_file", specifiers(a, s.unit, s.report))
    s.mapped(a, "env_file")


def _defaults(s: _Service) -> None:
    where, name = s.app.where, s.unit.file_name
    if s.app.get("restart") is None:
        s.app.set("restart", "never")
        s.report.mapped(where, f"{name} Restart (default no)", "restart: never")
    timeouts = ("TimeoutStopSec", "TimeoutSec")
    if all(s.unit.last("Service", k) is None for k in timeouts):
        s.app.set("stop.timeout", 90)
        s.report.mapped(where, f"{name} TimeoutStopSec (default 90s)", "stop.timeout: 90")
    limits = ("RestartSec", "StartLimitBurst")
    if s.app.get("restart") != "never" and all(s.unit.last("Service", k) is None for k in limits):
        s.report.approximated(
            where, f"{name} RestartSec, StartLimitBurst (defaults 100ms, 5)", "backoff",
            "systemd restarts after 100 ms and gives up after 5 starts in 10 s; here "
            "restarts back off from 0.5 s to 30 s and never give up",
        )  # fmt: skip


def _reload(s: _Service) -> None:
    pidfile = s.unit.last("Service", "PIDFile")
    reloads = s.unit.values("Service", "ExecReload")
    signal = kill_signal(reloads[0]) if reloads else None
    if reloads and pidfile and signal == "USR2":
        s.app.set("reload", {"signal": signal, "pidfile": specifiers(pidfile, s.unit, s.report)})
        s.mapped(reloads[0], "reload.signal (supctl reload: the re-exec reload)")
        s.mapped(pidfile, "reload.pidfile (where the new master's pid is read)")
        return
    for a in reloads:
        if signal == "USR2":
            s.not_mapped(
                a, "the re-exec reload (reload: {signal, pidfile}) needs the new master's "
                "PIDFile=; without it `supctl reload` is a hot swap here",
            )  # fmt: skip
        elif signal:
            s.not_mapped(a, f"an in-place reload (same pid): use `supctl signal {s.app.name} "
                         f"{signal}`; `supctl reload` is a hot swap here")  # fmt: skip
        else:
            s.not_mapped(a, "run it yourself; `supctl reload` is a hot swap here")
    if pidfile:
        s.not_mapped(pidfile, "the supervisor follows its own children (a pidfile is only "
                     "read by a re-exec reload: ExecReload=kill -USR2 $MAINPID)")  # fmt: skip


def _dependencies(services: list[_Service], report: Report) -> None:
    known: dict[str, str] = {}
    for s in services:
        known[s.unit.file_name] = s.app.name
    for s in services:
        deps: list[str] = []
        for a, unit_name in s.deps:
            target = known.get(unit_name) or known.get(unit_name + ".service")
            subject = f"{a.key}={unit_name}"
            if target is None:
                report.not_mapped(a.where, subject, "not imported: order the daemon's own "
                                  "unit (supervisord-lite.service) after it")  # fmt: skip
            elif target != s.app.name:
                if target not in deps:
                    deps.append(target)
                report.mapped(a.where, subject, f"depends_on: {target} (started once it is "
                              "ready, stopped after this app)")  # fmt: skip
        if deps:
            s.app.set("depends_on", deps)
