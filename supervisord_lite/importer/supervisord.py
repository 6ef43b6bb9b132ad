"""supervisord's ``[program:x]`` sections as our apps (files read by :mod:`supervisord_read`).

Each program key is handled by :data:`supervisord_keys.KEYS`; a key supervisord does
not know is reported too. supervisord's defaults that differ from ours
(``autorestart=unexpected``, ``startretries=3``, ``stopwaitsecs=10``) are written out,
so the app behaves as it did. ``numprocs`` processes become the instances of one app,
named by their ``process_num`` (``%(process_num)02d`` names them ``00``, ``01``...),
and ``%(process_num)s`` in a value becomes ``{instance}``. ``priority`` becomes
``depends_on`` on the programs of the next lower priority. The ``environment`` of
``[supervisord]`` is every app's, as supervisord passes it to every child.
"""

from __future__ import annotations

from .emit import ImportedApp, literal
from .report import Report
from .supervisord_keys import DAEMON_KEYS, KEYS, SECTIONS_NOT_MAPPED, Program, key_value_pairs
from .supervisord_read import Section, expand, read_all


def load(path: str, report: Report) -> list[ImportedApp]:
    """The apps of a supervisord config file (and the files it includes)."""
    sections = read_all(path)
    groups: dict[str, str] = {}
    env: dict[str, str] = {}
    for section in sections:
        kind, _, name = section.name.partition(":")
        if kind == "group" and name:
            members = section.options.get("programs")
            for program in (members.value if members else "").split(","):
                groups[program.strip()] = name
            report.not_mapped(
                section.where,
                f"[{section.name}]",
                "no groups here: each program is an app; name them together "
                "(supctl start/reload APP APP...)",
            )
        elif section.name == "supervisord":
            _daemon(section, report, env)
        elif kind in SECTIONS_NOT_MAPPED:
            report.not_mapped(section.where, f"[{section.name}]", SECTIONS_NOT_MAPPED[kind])
        elif kind != "program" or not name:
            report.not_mapped(section.where, f"[{section.name}]", "not a supervisord section")
    programs = [
        _program(s, groups.get(s.name.split(":", 1)[1], s.name.split(":", 1)[1]), report, env)
        for s in sections
        if s.name.startswith("program:")
    ]
    _order(programs, report)
    return [p.app for p in programs]


def _daemon(section: Section, report: Report, env: dict[str, str]) -> None:
    for key, option in section.options.items():
        subject = f"[supervisord] {key}={option.value}"
        if key == "environment":
            env.update(key_value_pairs(expand(option, {"here": option.here}), option.where))
            report.mapped(option.where, subject, "env of every app")
        else:
            why = DAEMON_KEYS.get(key, "a setting of supervisord itself")
            report.not_mapped(option.where, subject, f"the daemon's own: {why}")


def _program(section: Section, group: str, report: Report, env: dict[str, str]) -> Program:
    p = Program(section, group, report, {k: literal(v) for k, v in env.items()})
    options = section.options
    if "command" not in options:
        raise section.where.error(f"{p.subject} has no command= (supervisord requires one)")
    for key in options:
        handler = KEYS.get(key)
        if handler is None:
            p.not_mapped(key, "not a [program] setting supervisord knows")
        else:
            handler(p, key)
    defaults = (
        ("autorestart", "unexpected", "restart", "on-failure"),
        ("startretries", "3", "backoff.max_retries", 3),
        ("stopwaitsecs", "10", "stop.timeout", 10),
    )
    for key, shown, ours, value in defaults:
        if key not in options:
            p.app.set(ours, value)
            p.default(key, shown, f"{ours}: {value}")
    if p.env:
        p.app.set("env", p.env)
    _instances(p)
    return p


def _instances(p: Program) -> None:
    options = p.section.options
    count = p.integer("numprocs", 1) if "numprocs" in options else 1
    first = p.integer("numprocs_start") if "numprocs_start" in options else 0
    conversions = sorted(p.conversions)
    names = [("%" + (conversions or ["d"])[0]) % n for n in range(first, first + count)]
    if count > 1 or conversions:
        p.app.set("instances", names)
    for key in ("numprocs", "numprocs_start"):
        if key not in options:
            continue
        if len(conversions) > 1:
            p.approx(
                key,
                f"instances: {names}",
                "one name per process: the first of the "
                f"process_num formats {conversions} is used everywhere",
            )
        else:
            p.mapped(key, f"instances: {names} (%(process_num)s -> {{instance}})")
    if "process_name" in options:
        written = options["process_name"].value
        if count == 1 and written == "%(program_name)s":
            p.mapped("process_name", "the app's name")
        else:
            p.approx(
                "process_name",
                "instances",
                f"processes are named {p.app.name}:INSTANCE (the instance names above)",
            )


def _order(programs: list[Program], report: Report) -> None:
    priorities = sorted({p.priority for p in programs})
    for p in programs:
        given = "priority" in p.section.options
        lower = [x for x in priorities if x < p.priority]
        if not lower:
            if given:
                p.mapped("priority", "no depends_on (nothing starts before it)")
            continue
        deps = [q.app.name for q in programs if q.priority == lower[-1]]
        p.app.set("depends_on", deps)
        differs = (
            "supervisord only orders the starts; depends_on also waits until they are "
            "ready, and stops this app before them"
        )
        if given:
            p.approx("priority", f"depends_on: {deps}", differs)
        else:
            report.approximated(
                p.section.where,
                f"{p.subject} priority (default 999)",
                f"depends_on: {deps}",
                differs,
            )
