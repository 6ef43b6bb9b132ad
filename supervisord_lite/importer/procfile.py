"""A Procfile (foreman, honcho, Heroku) as our apps: one app per process type.

``TYPE: command`` lines (``#`` comments and blank lines skipped; any other line is a
SourceError). The command runs in the Procfile's directory, as foreman runs it: a
command with shell syntax (``&&``, ``$VAR``, redirections...) is run by ``/bin/sh
-c`` as foreman does; a plain one is split into its arguments, with leading
``NAME=value`` words as ``env``. A command that uses ``$PORT``/``${PORT}`` (and the
``web`` type, which Heroku's convention makes read ``PORT`` from its environment)
gets a port of its own, ``port_base + 100 * index`` (foreman's numbering, index the
line's position among the types), as ``listen`` with ``socket_activation: false``
(the app binds it itself), ``{port}`` in place of ``$PORT`` and ``PORT`` in ``env``.
A ``.env`` beside the Procfile is the apps' ``env_file`` when our env_file syntax
reads it. ``release:`` is reported, not mapped.
"""

from __future__ import annotations

import os
import re
import shlex

from ..host.envfile import EnvFileError
from ..host.envfile import parse as parse_env_file
from .emit import ImportedApp, app_name, literal
from .report import Report, Where
from .source import read_text

DEFAULT_PORT_BASE = 5000
PORT_STEP = 100
_LINE = re.compile(r"(?P<type>[A-Za-z0-9_-]+):[ \t]*(?P<command>.*)")
_PORT_REF = re.compile(r"\$(?:\{PORT\}|PORT\b)")
_PORT_TOKEN = "PORT0PLACEHOLDER"
_SHELL_SYNTAX = re.compile(r"[$;&|<>()`*?\[\]~#\n\\]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def load(path: str, report: Report, port_base: int = DEFAULT_PORT_BASE) -> list[ImportedApp]:
    text = read_text(path)
    directory = os.path.dirname(os.path.abspath(path))
    env_file = _env_file(path, report)
    apps: list[ImportedApp] = []
    seen: dict[str, int] = {}
    index = -1
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = Where(path, n)
        found = _LINE.fullmatch(line.rstrip())
        if found is None:
            raise where.error(f"cannot parse {line.strip()!r} (expected 'type: command')")
        kind, command = found.group("type"), found.group("command").strip()
        if kind in seen:
            raise where.error(f"process type {kind!r} is given twice (first on line {seen[kind]})")
        seen[kind] = n
        if not command:
            raise where.error(f"process type {kind!r} has no command")
        index += 1
        subject = f"{kind}: {command}"
        if kind == "release":
            report.not_mapped(where, subject, "not yet: run it before `supctl deploy`")
            continue
        app = ImportedApp(app_name(kind, where, report, subject), where, f"Procfile: {kind}")
        app.set("cwd", literal(directory))
        if env_file is not None:
            app.set("env_file", env_file)
        _command(app, command, where, subject, report, port_base + PORT_STEP * index)
        apps.append(app)
    return apps


def _command(
    app: ImportedApp, command: str, where: Where, subject: str, report: Report, port: int
) -> None:
    uses_port = _PORT_REF.search(command) is not None
    marked = _PORT_REF.sub(_PORT_TOKEN, command)
    env: dict[str, str] = {}
    if _SHELL_SYNTAX.search(marked):
        argv = ["/bin/sh", "-c", marked]
        how = "command, run by /bin/sh -c as foreman runs it"
    else:
        try:
            argv = shlex.split(marked)
        except ValueError as exc:
            raise where.error(f"cannot split the command: {exc}") from None
        while len(argv) > 1 and _ASSIGNMENT.match(argv[0]):
            name, _, value = argv.pop(0).partition("=")
            env[name] = literal(value)
        how = "command" + (" and env (its NAME=value prefix)" if env else "")
    app.set("command", shlex.join(literal(a).replace(_PORT_TOKEN, "{port}") for a in argv))
    if uses_port or app.name == "web":
        app.set("listen", f"127.0.0.1:{port}")
        app.set("socket_activation", False)
        env["PORT"] = "{port}"
    if env:
        app.set("env", {k: v.replace(_PORT_TOKEN, "{port}") for k, v in env.items()})
    if uses_port:
        report.mapped(where, subject, f"{how}; $PORT -> listen {port} (the app binds it)")
    elif app.name == "web":
        report.approximated(
            where,
            subject,
            f"{how}; listen {port}, PORT in env",
            "a web process is taken to listen on $PORT (Heroku's convention); "
            "remove listen if it does not",
        )
    else:
        report.mapped(where, subject, how)


def _env_file(procfile: str, report: Report) -> str | None:
    path = os.path.join(os.path.dirname(procfile), ".env")
    if not os.path.exists(path):
        return None
    where = Where(path, 1)
    try:
        parse_env_file(read_text(path), path)
    except EnvFileError as exc:
        report.not_mapped(
            Where(path, exc.line or 1),
            ".env",
            f"our env_file reads systemd's EnvironmentFile syntax: {exc.reason}",
        )
        return None
    report.mapped(where, ".env", "env_file of every app")
    return os.path.abspath(path)
