"""systemd's values with specifiers, and its ``Exec*=`` command lines, as ours.

- :func:`specifiers`: ``%n %N %p %i %I %f %H %t %S %C %L %E %T %V %%`` resolved as
  systemd resolves them for a system unit (``%i`` becomes ``{instance}`` in a template
  unit, ``web@.service``); any other specifier is reported and left as written.
- :func:`exec_command`: the ``-``/``@``/``:``/``+``/``!``/``!!`` prefixes, the words
  (:func:`systemd_unit.split_words`), and ``$VAR``/``${VAR}`` references, which
  systemd expands from the unit's environment: such a command is run by ``/bin/sh
  -c 'exec ...'`` here, so the shell expands them (approximated: a shell, not systemd).
- :func:`kill_signal`: the signal an ``ExecReload=kill -s USR2 $MAINPID`` sends.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from dataclasses import dataclass

from ..config.values import parse_signal
from .emit import literal
from .report import Report
from .systemd_unit import Assignment, Unit, split_words

INSTANCE_TOKEN = "INSTANCE0PLACEHOLDER"  # %i in a template unit, until it is {instance}
_SPECIFIER = re.compile(r"%(.)")
_FIXED = {"t": "/run", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "E": "/etc",
          "T": "/tmp", "V": "/var/tmp", "%": "%"}  # fmt: skip
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_PREFIXES = "-@:+!"


def names(unit: Unit) -> tuple[str, str, bool]:
    """(prefix, instance, is a template) of ``web@1.service`` -> ("web", "1", False)."""
    stem = unit.file_name.rsplit(".", 1)[0]
    prefix, at, instance = stem.partition("@")
    return prefix, instance, bool(at) and not instance


def specifiers(a: Assignment, unit: Unit, report: Report) -> str:
    prefix, instance, template = names(unit)
    stem = unit.file_name.rsplit(".", 1)[0]
    if template:  # the name of the unit as started: web@NAME.service
        stem = f"{prefix}@{INSTANCE_TOKEN}"
    values = {
        "n": stem + "." + unit.file_name.rsplit(".", 1)[1],
        "N": stem,
        "p": prefix,
        "H": socket.gethostname(),
        **_FIXED,
    }
    if template:
        values.update(i=INSTANCE_TOKEN, I=INSTANCE_TOKEN, f="/" + INSTANCE_TOKEN)
    else:
        values.update(i=instance, I=instance, f="/" + (instance or prefix))

    def one(m: re.Match[str]) -> str:
        if m.group(1) in values:
            if m.group(1) == "H":
                report.approximated(
                    a.where, f"{a.key}=...%H", "this host's name", "expanded on this host"
                )
            return values[m.group(1)]
        report.not_mapped(
            a.where,
            f"{a.key}=...{m.group(0)}",
            "a specifier with no equivalent here: left as written; replace it by its value",
        )
        return m.group(0)

    return _SPECIFIER.sub(one, a.value)


@dataclass(frozen=True)
class Command:
    text: str  # our command setting (a command line)
    prefixes: str
    uses_shell: bool


def exec_command(a: Assignment, unit: Unit, report: Report) -> Command:
    value = specifiers(a, unit, report)
    prefixes = ""
    while value[:1] in _PREFIXES and value[:1]:
        prefixes, value = prefixes + value[0], value[1:]
    words = split_words(value, a.where)
    if "@" in prefixes and len(words) > 1:
        del words[1]  # the argv[0] systemd would give: here argv[0] is the program
    if not words:
        raise a.where.error(f"{a.key}= names no program")
    if ":" not in prefixes and any(_VAR.search(w) for w in words):
        script = "exec " + " ".join(_shell_word(w) for w in words)
        return Command(shlex.join(["/bin/sh", "-c", _template(script)]), prefixes, True)
    return Command(shlex.join(_template(w) for w in words), prefixes, False)


def _template(text: str) -> str:
    return literal(text).replace(INSTANCE_TOKEN, "{instance}")


def _shell_word(word: str) -> str:
    """One systemd word in sh syntax: ``$FOO`` alone still splits, ``${FOO}`` does not."""
    whole = _VAR.fullmatch(word)
    if whole and whole.group(2):
        return "$" + whole.group(2)
    out, pos = [], 0
    for m in _VAR.finditer(word):
        out.append(shlex.quote(word[pos : m.start()]) if m.start() > pos else "")
        name = m.group(1) or m.group(2)
        out.append(f'"${name}"' if name else "'$'")
        pos = m.end()
    if pos < len(word):
        out.append(shlex.quote(word[pos:]))
    return "".join(out)


def kill_signal(a: Assignment) -> str | None:
    """The signal of ``[/bin/]kill [-s] -SIG $MAINPID``, or None for another command."""
    words = split_words(a.value.lstrip(_PREFIXES), a.where)
    if len(words) < 2 or os.path.basename(words[0]) != "kill":
        return None
    if words[-1] not in ("$MAINPID", "${MAINPID}"):
        return None
    options = words[1:-1]
    if len(options) == 2 and options[0] in ("-s", "--signal"):
        name = options[1]
    elif len(options) == 1 and options[0].startswith("-"):
        name = options[0][1:]
    else:
        return None
    try:
        return parse_signal(int(name) if name.isdigit() else name).name.removeprefix("SIG")
    except ValueError:
        return None
